#!/usr/bin/env bash
# Stops the Kafka broker that start.sh started: only the process named in
# $CONSENTRY_RUN_DIR/kafka/kafka.pid, and only if it is still that broker. SIGTERM, up to 30 s for a
# clean shutdown, then SIGKILL. Silent when nothing is running.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
run=${CONSENTRY_RUN_DIR:-$root/var/run}/kafka
pidfile=$run/kafka.pid

[[ -f "$pidfile" ]] || exit 0
pid=$(<"$pidfile")
if ! [[ "$pid" =~ ^[0-9]+$ ]]; then
  echo "stop.sh: ignoring $pidfile: '$pid' is not a pid" >&2
  rm -f -- "$pidfile"
  exit 0
fi

alive() { # running, and not a zombie
  local state
  state=$(awk '{sub(/.*\) /, ""); print $1}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z ]]
}

# The pid must still be our broker: a java running kafka.Kafka on this run dir's properties
# (after a reboot or a crash the number may belong to something else now).
ours() {
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$run/server.properties" &&
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF kafka.Kafka
}

if alive && ours; then
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do alive || break; sleep 0.1; done
  if alive; then
    echo "stop.sh: Kafka (pid $pid) still running after 30s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive || break; sleep 0.1; done
  fi
elif alive; then
  echo "stop.sh: pid $pid from $pidfile is not this run dir's Kafka; not touching it" >&2
fi
rm -f -- "$pidfile"
