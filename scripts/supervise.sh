# shellcheck shell=bash
# supervise NAME COMMAND...: run COMMAND and start it again whenever it exits, until stopped.
#
# Why: a worker on the solo pool ends its own process when a task runs past its hard time
# limit (workers/time_limits.py: the work is failed first, then the process exits with 70),
# because nothing else can stop a task stuck in C code there; a crashed worker likewise. Like
# systemd's Restart=always or a Kubernetes pod's restartPolicy, this brings a fresh worker up.
# SIGTERM/SIGINT stop the command and the loop. Sourced by scripts/run.sh, which runs each
# worker as `supervise gpu python3 -m celery ... &`; SUPERVISE_RESTART_SECONDS (default 2)
# spaces restarts so a worker that cannot start does not spin.
supervise() {
  local name=$1
  shift
  local child="" rc
  # shellcheck disable=SC2064 # $name is fixed now; $child is read when the trap runs
  trap "trap - TERM INT; if [ -n \"\$child\" ]; then kill -TERM \"\$child\" 2>/dev/null || true; wait \"\$child\" 2>/dev/null || true; fi; exit 0" TERM INT
  while :; do
    "$@" &
    child=$!
    rc=0
    wait "$child" || rc=$?
    child=""
    echo "supervise: the $name worker exited with status $rc; starting it again" >&2
    sleep "${SUPERVISE_RESTART_SECONDS:-2}" &
    wait $! || true
  done
}
