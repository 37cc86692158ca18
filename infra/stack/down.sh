#!/usr/bin/env bash
# `make down`: stops what `make up` started, services first (faust workers must stop before the
# broker), then Kafka and PostgreSQL. Only pids recorded by up.sh are signalled.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export CONSENTRY_RUN_DIR=${CONSENTRY_RUN_DIR:-$root/var/run}
run=$CONSENTRY_RUN_DIR/stack
for name in intake processors shredder relay api; do
  pidfile=$run/$name.pid
  [[ -f $pidfile ]] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && grep -q consentry "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pidfile"
done
bash "$root/infra/kafka/stop.sh"
bash "$root/infra/postgres/stop.sh"
