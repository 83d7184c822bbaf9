# Shared by up.sh / down.sh / status.sh: where the single-node cluster keeps its files, and helpers.
# Sourced, not run. Everything is root-owned system state (Debian package layout).

SLURM_ETC=${SLURM_ETC:-/etc/slurm}
SLURM_CONF_FILE=$SLURM_ETC/slurm.conf
SLURMDBD_CONF_FILE=$SLURM_ETC/slurmdbd.conf
SLURM_LOG_DIR=/var/log/slurm
# Marks the files this project wrote: an existing config without it is someone's real cluster and is
# never overwritten.
SLURM_MARK="# written by value-harms scripts/slurm/up.sh"
CLUSTER_NAME=${VALUE_HARMS_SLURM_CLUSTER:-vhcluster}

# daemon name, pid file, executable (readlink -f of /proc/PID/exe must equal it: Debian's
# slurmctld/slurmd are symlinks to *-wlm binaries, so the check follows the link)
PID_MUNGED=/run/munge/munged.pid
PID_MARIADB=/run/mysqld/mysqld.pid
PID_SLURMDBD=/run/slurmdbd.pid
PID_SLURMCTLD=/run/slurmctld.pid
PID_SLURMD=/run/slurmd.pid
MARIADB_SOCKET=/run/mysqld/mysqld.sock

log() { printf 'slurm: %s\n' "$*" >&2; }
die() { printf 'slurm: error: %s\n' "$1" >&2; exit "${2:-1}"; }

# as_root CMD...: run as root (directly, or through passwordless sudo)
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

can_be_root() {
  [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }
}

# pid_of PIDFILE EXE: the pid in PIDFILE when that process is alive and runs EXE, else nothing
pid_of() {
  local pidfile=$1 exe pid real
  exe=$(readlink -f "$2")
  [ -r "$pidfile" ] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  real=$(readlink -f "/proc/$pid/exe" 2>/dev/null) || return 1
  # a binary replaced by an upgrade reads as "<path> (deleted)"
  [ "${real% (deleted)}" = "$exe" ] || return 1
  echo "$pid"
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.1 s until it succeeds
wait_for() {
  local limit=$1 what=$2 i=0
  shift 2
  while ! "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -ge $((limit * 10)) ] && { log "timed out after ${limit}s waiting for $what"; return 1; }
    sleep 0.1
  done
}

node_state() { sinfo -h -N -o '%t' 2>/dev/null | head -n1; }
node_idle() { [ "$(node_state)" = idle ]; }
# up: the node takes work (idle, or running jobs: a busy cluster is an up cluster)
node_ready() { case "$(node_state)" in idle | alloc | mix | comp) return 0 ;; *) return 1 ;; esac; }

# ghost_jobs [STATES]: jobs the controller lists in STATES (default RUNNING) on this node that have no
# slurmstepd here, one per line in the form scancel accepts (an array task as ARRAY_TASK: slurmctld 22.05
# answers "invalid job id" to the raw id of an array task it recovered from its saved state). They are
# what a machine restart leaves: slurmctld restores its saved state, the processes died with the machine,
# and the "running" jobs hold the cores for ever (seen: a study's seed-curve array held both cores for
# 27 minutes after the machine came back, and the next stage's jobs waited behind it).
ghost_jobs() {
  local id name
  squeue -h -t "${1:-RUNNING}" -o '%A %i' 2>/dev/null | while read -r id name; do
    pgrep -f "^slurmstepd: \[$id\." >/dev/null 2>&1 || echo "$name"
  done
}
no_ghosts() { [ -z "$(ghost_jobs RUNNING,COMPLETING)" ]; }
