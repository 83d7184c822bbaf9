#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by up.sh (make slurm-down): cancel every job first
# (jobs outlive slurmd), then stop slurmd, slurmctld, slurmdbd, mariadbd and munged by the PIDs in
# their pid files (never by name), waiting for each to exit. Safe to run when nothing is running.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"
export PATH=$PATH:/usr/sbin:/sbin

if [ "$(id -u)" != 0 ]; then
  can_be_root || die "needs root (or passwordless sudo) to stop the daemons" 3
  exec sudo -n -E "$0" "$@"
fi

# stop PIDFILE EXE NAME: SIGTERM, wait up to 15 s, then SIGKILL
stop() {
  local pid
  pid=$(pid_of "$1" "$2") || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  if ! wait_for 15 "$3 (pid $pid) to exit" sh -c "! kill -0 $pid"; then
    log "$3 (pid $pid) ignored SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_for 5 "$3 (pid $pid) to die" sh -c "! kill -0 $pid" || true
  fi
  rm -f "$1"
  log "stopped $3 (pid $pid)"
}

if pid_of "$PID_SLURMCTLD" /usr/sbin/slurmctld >/dev/null && command -v squeue >/dev/null; then
  # a pending array by its array id (cancels every task), anything else by the id scancel takes for it
  # (an array task as ARRAY_TASK: see ghost_jobs in common.sh)
  jobs=$({ squeue -h -t PENDING -o '%A'; squeue -h -t RUNNING,COMPLETING,SUSPENDED,CONFIGURING -o '%i'; } 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    wait_for 30 "jobs to end" sh -c '[ -z "$(squeue -h -t R,CG -o %A 2>/dev/null)" ]' || true
  fi
fi
stop "$PID_SLURMD" /usr/sbin/slurmd slurmd
stop "$PID_SLURMCTLD" /usr/sbin/slurmctld slurmctld
stop "$PID_SLURMDBD" /usr/sbin/slurmdbd slurmdbd
stop "$PID_MARIADB" /usr/sbin/mariadbd mariadbd
stop "$PID_MUNGED" /usr/sbin/munged munged
