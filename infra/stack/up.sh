#!/usr/bin/env bash
# `make up`: the distributed topology as local processes (no Docker needed): Kafka, PostgreSQL,
# then the API, relay and faust workers, each as the PostgreSQL role of its service.
# Pids, logs, the key file and the workers' state go to $CONSENTRY_RUN_DIR/stack; `make down`
# (infra/stack/down.sh) stops them.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export CONSENTRY_RUN_DIR=${CONSENTRY_RUN_DIR:-$root/var/run}
run=$CONSENTRY_RUN_DIR/stack
bin=$root/.venv/bin
mkdir -p "$run"
bash "$root/infra/kafka/start.sh"
bash "$root/infra/postgres/start.sh"
set -a
# shellcheck disable=SC1091
source "$CONSENTRY_RUN_DIR/kafka/env"
# shellcheck disable=SC1091
source "$CONSENTRY_RUN_DIR/postgres/env"
set +a
export CONSENTRY_POLICY=${CONSENTRY_POLICY:-$root/examples/policy.yaml}
export CONSENTRY_KEY_FILE=${CONSENTRY_KEY_FILE:-$run/keys.json}
export CONSENTRY_DATA_DIR=${CONSENTRY_DATA_DIR:-$run/data}  # the faust workers' state
CONSENTRY_PG_OWNER_DSN=$CONSENTRY_PG_DSN_OWNER "$bin/consentry" migrate

start() {  # name, DSN for CONSENTRY_PG_DSN, DSN for CONSENTRY_PG_VIEWS_DSN, command...
  local name=$1 dsn=$2 views=$3
  shift 3
  CONSENTRY_PG_DSN=$dsn CONSENTRY_PG_VIEWS_DSN=$views nohup "$bin/consentry" "$@" \
    >"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
}
start api "$CONSENTRY_PG_DSN_LEDGER" "$CONSENTRY_PG_DSN_QUERY" serve --port "${PORT:-8000}"
start relay "$CONSENTRY_PG_DSN_PROCESSORS" "" relay
start processors "" "$CONSENTRY_PG_DSN_PROCESSORS" worker processors
start shredder "$CONSENTRY_PG_DSN_SHREDDER" "" worker shredder
start intake "$CONSENTRY_PG_DSN_LEDGER" "" worker intake
for _ in $(seq 1 100); do
  if curl -fs "http://127.0.0.1:${PORT:-8000}/healthz" >/dev/null; then
    echo "Consentry (distributed) API at http://127.0.0.1:${PORT:-8000}/docs; logs in $run"
    exit 0
  fi
  sleep 0.3
done
echo "the API did not come up; see $run/api.log" >&2
exit 1
