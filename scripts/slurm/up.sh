#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine (make slurm-up).
#
#   - installs the Debian packages when missing (slurmctld slurmd slurm-client munge slurmdbd
#     mariadb-server; apt, as root or through passwordless sudo)
#   - writes /etc/slurm/slurm.conf and slurmdbd.conf for this machine (cores and memory detected);
#     an existing config not written by this script is left alone and the script stops
#   - starts munged, mariadbd, slurmdbd (accounting: submitit needs `sacct` to see a job that died
#     without a result), slurmctld and slurmd, each only when not already running (idempotent)
#   - cancels jobs restored as running whose processes died with the machine (a restart)
#   - waits until the node takes work (idle, or busy with live jobs)
#
# Exit status: 0 the cluster is up; 3 it cannot run on this machine (no apt, no root, packages not
# installable, someone else's slurm.conf): callers skip; 1 a start failed (logs in /var/log/slurm).
# No cgroups are needed (proctrack/linuxproc): CPU and memory limits are scheduled, not enforced.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

if [ "$(id -u)" != 0 ]; then
  can_be_root || die "needs root (or passwordless sudo) to install and start the daemons" 3
  exec sudo -n -E "$0" "$@"
fi
t0=$(date +%s.%N)

# ------------------------------------------------------------------ packages
PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
missing=0
for exe in slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mungekey mariadbd; do
  command -v "$exe" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$exe" >/dev/null 2>&1 || missing=1
done
export PATH=$PATH:/usr/sbin:/sbin
if [ "$missing" = 1 ]; then
  command -v apt-get >/dev/null 2>&1 || die "SLURM is not installed and there is no apt-get to install it (Debian/Ubuntu packages: ${PKGS[*]})" 3
  log "installing ${PKGS[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get install -y -q --no-install-recommends "${PKGS[@]}" >/tmp/value-harms-slurm-apt.log 2>&1; }
  if ! apt_install; then
    apt-get update -q >>/tmp/value-harms-slurm-apt.log 2>&1 || true
    apt_install || die "apt-get install ${PKGS[*]} failed (log: /tmp/value-harms-slurm-apt.log)" 3
  fi
fi

# ------------------------------------------------------------------ configuration
host=$(hostname -s)
cpus=$(nproc --all)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
real_mb=$((mem_mb > 2048 ? mem_mb - 1024 : mem_mb / 2))

for f in "$SLURM_CONF_FILE" "$SLURMDBD_CONF_FILE"; do
  if [ -s "$f" ] && ! grep -qxF "$SLURM_MARK" "$f"; then
    die "$f exists and was not written by this script: not touching a real cluster's config" 3
  fi
done
mkdir -p "$SLURM_ETC" "$SLURM_LOG_DIR" /var/spool/slurmctld /var/spool/slurmd

new_conf=$(cat <<EOF
$SLURM_MARK
ClusterName=$CLUSTER_NAME
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_LOG_DIR/jobcomp.log
ReturnToService=2
SchedulerParameters=sched_interval=2,bf_interval=1
KillWait=5
MinJobAge=300
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$PID_SLURMCTLD
SlurmdPidFile=$PID_SLURMD
SlurmctldLogFile=$SLURM_LOG_DIR/slurmctld.log
SlurmdLogFile=$SLURM_LOG_DIR/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
new_dbd=$(cat <<EOF
$SLURM_MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
LogFile=$SLURM_LOG_DIR/slurmdbd.log
PidFile=$PID_SLURMDBD
EOF
)
changed=0
if [ "$(cat "$SLURM_CONF_FILE" 2>/dev/null)" != "$new_conf" ]; then
  printf '%s\n' "$new_conf" >"$SLURM_CONF_FILE"; changed=1
fi
if [ "$(cat "$SLURMDBD_CONF_FILE" 2>/dev/null)" != "$new_dbd" ]; then
  printf '%s\n' "$new_dbd" >"$SLURMDBD_CONF_FILE"; changed=1
fi
chmod 0644 "$SLURM_CONF_FILE"
chmod 0600 "$SLURMDBD_CONF_FILE"
if [ "$changed" = 1 ] && { pid_of "$PID_SLURMCTLD" /usr/sbin/slurmctld || pid_of "$PID_SLURMD" /usr/sbin/slurmd; } >/dev/null; then
  log "config changed: restarting the running daemons"
  "$here/down.sh"
fi

fail() {  # fail WHAT LOGFILE: print the log's tail and stop
  log "$1 did not start; last lines of $2:"
  tail -n 20 "$2" >&2 2>/dev/null || true
  exit 1
}

# ------------------------------------------------------------------ munge
if ! pid_of "$PID_MUNGED" /usr/sbin/munged >/dev/null; then
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged --force
  wait_for 10 munged sh -c 'munge -n | unmunge' || fail munged /var/log/munge/munged.log
fi

# ------------------------------------------------------------------ accounting: mariadb + slurmdbd
if ! pid_of "$PID_MARIADB" /usr/sbin/mariadbd >/dev/null; then
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$SLURM_LOG_DIR/mariadb-install.log" 2>&1 \
      || fail mariadb-install-db "$SLURM_LOG_DIR/mariadb-install.log"
  fi
  # detached from this shell (setsid): it must outlive `make slurm-up`
  setsid /usr/sbin/mariadbd --user=mysql --skip-networking --datadir=/var/lib/mysql \
    --pid-file="$PID_MARIADB" --socket="$MARIADB_SOCKET" --log-error="$SLURM_LOG_DIR/mariadb.log" \
    </dev/null >/dev/null 2>&1 &
  wait_for 30 mariadbd mariadb --socket="$MARIADB_SOCKET" -e 'select 1' || fail mariadbd "$SLURM_LOG_DIR/mariadb.log"
fi
if ! pid_of "$PID_SLURMDBD" /usr/sbin/slurmdbd >/dev/null; then
  /usr/sbin/slurmdbd
  wait_for 30 slurmdbd sacctmgr -n list cluster || fail slurmdbd "$SLURM_LOG_DIR/slurmdbd.log"
fi
if ! sacctmgr -n -P list cluster format=cluster | grep -qxF "$CLUSTER_NAME"; then
  sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null
fi

# ------------------------------------------------------------------ slurmctld + slurmd
if ! pid_of "$PID_SLURMCTLD" /usr/sbin/slurmctld >/dev/null; then
  /usr/sbin/slurmctld
  wait_for 20 slurmctld scontrol ping || fail slurmctld "$SLURM_LOG_DIR/slurmctld.log"
fi
started_slurmd=0
if ! pid_of "$PID_SLURMD" /usr/sbin/slurmd >/dev/null; then
  /usr/sbin/slurmd
  started_slurmd=1
fi
if [ "$started_slurmd" = 1 ]; then
  # slurmd was not running: a job listed as running with no slurmstepd lost its processes (a machine
  # restart). Cancel it so that its cores come back; its sweep lists it as failed and reruns it.
  wait_for 10 "slurmd" scontrol show node "$host" || true
  ghosts=$(ghost_jobs | tr '\n' ' ')
  if [ -n "${ghosts// /}" ]; then
    log "cancelling job(s) ${ghosts% } restored as running with no process left (the machine restarted under them; python -m value_harms.status lists them as not done, with the rerun command)"
    # shellcheck disable=SC2086
    scancel $ghosts || true
    # answer only once their cores are free: a cluster whose cores stay held is not up
    if ! wait_for 15 "the cancelled jobs to leave the node" no_ghosts; then
      log "job(s) ${ghosts% } still hold the node after scancel; last lines of $SLURM_LOG_DIR/slurmctld.log:"
      tail -n 20 "$SLURM_LOG_DIR/slurmctld.log" >&2 2>/dev/null || true
      exit 1
    fi
  fi
fi
if ! wait_for 30 "node $host up" node_ready; then
  # a node left down/drained by an unclean stop: resume it once
  scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
  wait_for 15 "node $host up" node_ready || fail "node $host (state: $(node_state))" "$SLURM_LOG_DIR/slurmd.log"
fi
log "up: cluster $CLUSTER_NAME, node $host ($cpus CPUs, ${real_mb} MB), partition debug, accounting on ($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s)"
