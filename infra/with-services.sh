#!/usr/bin/env bash
# Runs a command with the services the tests need, and stops what it started, whatever happens.
# Kafka and PostgreSQL join here when the distributed mode lands (infra/kafka, infra/postgres).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
started=()
cleanup() {
  for service in "${started[@]}"; do bash "$here/$service/stop.sh" || true; done
}
trap cleanup EXIT
for service in ${CONSENTRY_SERVICES:-}; do
  bash "$here/$service/start.sh"
  started+=("$service")
done
"$@"
