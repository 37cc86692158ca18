#!/usr/bin/env bash
# docker-compose only: the postgres image runs this once on an empty volume. Same roles and grants as
# infra/postgres/start.sh (roles.sql), with passwords from the container's environment.
set -euo pipefail
{
  for role in owner ledger processors query shredder; do
    var="CONSENTRY_${role^^}_PASSWORD"
    printf '\\set %s_password %s\n' "$role" "${!var}"
  done
  cat /consentry/roles.sql
} | psql -X -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -f -
