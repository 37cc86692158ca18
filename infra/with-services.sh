#!/usr/bin/env bash
# Runs a command with the services the tests need, and stops what it started, whatever happens.
# Each service lives in infra/<name>/ with start.sh and stop.sh; start.sh writes
# $CONSENTRY_RUN_DIR/<name>/env (KEY=VALUE lines) which is exported to the command, so tests find
# the broker and the database without guessing ports.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONSENTRY_RUN_DIR=${CONSENTRY_RUN_DIR:-$(cd "$here/.." && pwd)/var/run}
started=()
cleanup() {
  # Stop in reverse order of start.
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do bash "$here/${started[$i]}/stop.sh" || true; done
}
trap cleanup EXIT
for service in ${CONSENTRY_SERVICES-kafka postgres}; do
  bash "$here/$service/start.sh"
  started+=("$service")
  if [[ -f "$CONSENTRY_RUN_DIR/$service/env" ]]; then
    set -a
    # shellcheck disable=SC1090
    source "$CONSENTRY_RUN_DIR/$service/env"
    set +a
  fi
done
"$@"
