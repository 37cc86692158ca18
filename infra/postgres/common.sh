# Shared by start.sh and stop.sh (sourced, not run): paths, the server binaries, and the OS user
# the server runs as.
# shellcheck shell=bash

pg_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pg_repo=$(cd "$pg_here/../.." && pwd)
pg_run_root=${CONSENTRY_RUN_DIR:-$pg_repo/var/run}
mkdir -p "$pg_run_root"
pg_run_root=$(cd "$pg_run_root" && pwd) # absolute: the server and pg_ctl run from /
pg_run_dir=$pg_run_root/postgres
pg_pid_file=$pg_run_dir/postgres.pid
# The server's own files (data, socket, its log) live in the run dir, unless the server user cannot
# reach it (a clone under a 0700 directory, say): then start.sh puts them in a directory of their
# own under /var/tmp and records where in $pg_run_dir/server-dir.
pg_server_pointer=$pg_run_dir/server-dir
pg_set_server_paths() {
  pg_server_dir=$1
  pg_data_dir=$pg_server_dir/data
  pg_sock_dir=$pg_server_dir/socket
  pg_log=$pg_server_dir/postgres.log
}
if [[ -f $pg_server_pointer ]]; then
  pg_set_server_paths "$(cat "$pg_server_pointer")"
else
  pg_set_server_paths "$pg_run_dir"
fi

# initdb, pg_ctl and postgres refuse to run as root: as root, they run as this system user.
pg_os_user=${CONSENTRY_PG_OS_USER:-consentry-pg}

# The bin dir of the highest PostgreSQL version Debian's packages installed; empty if none.
pg_find_bindir() {
  local candidates=() d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/initdb && -x $d/pg_ctl ]] && candidates+=("$d")
  done
  ((${#candidates[@]})) || return 0
  printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1
}

pg_is_root() { [[ $(id -u) -eq 0 ]]; }

# Runs a command as the server's OS user (or as is, when not root).
as_pg() {
  if ! pg_is_root; then
    "$@"
  elif command -v runuser >/dev/null; then
    runuser -u "$pg_os_user" -- "$@"
  else
    local quoted
    quoted=$(printf '%q ' "$@")
    su -s /bin/bash "$pg_os_user" -c "$quoted"
  fi
}
