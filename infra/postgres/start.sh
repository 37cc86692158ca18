#!/usr/bin/env bash
# Starts a fresh, project-owned PostgreSQL cluster for the tests, on 127.0.0.1 and a free port, with
# database `consentry`, its schemas and roles (roles.sql), and writes the DSNs to
# $CONSENTRY_RUN_DIR/postgres/env. Any cluster a previous start left behind is stopped and wiped.
set -euo pipefail
started_ns=$(date +%s%N)
# shellcheck source=infra/postgres/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

die() {
  echo "postgres: $*" >&2
  exit 1
}

# 48 hex characters: safe in a URL and in a psql \set without quoting.
random_password() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

# --- The server binaries: Debian's packages, installed if missing (CI runs as root). ---
bindir=$(pg_find_bindir)
if [[ -z $bindir ]]; then
  pg_is_root || die "no initdb under /usr/lib/postgresql/*/bin; install Debian's postgresql package"
  mkdir -p "$pg_run_dir"
  echo "postgres: installing Debian's postgresql package" >&2
  # Keep the package from creating (and starting) its own cluster on port 5432.
  mkdir -p /etc/postgresql-common/createcluster.d
  [[ -e /etc/postgresql-common/createcluster.d/consentry.conf ]] ||
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/consentry.conf
  if ! {
    DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
  } >"$pg_run_dir/apt.log" 2>&1; then
    tail -n 30 "$pg_run_dir/apt.log" >&2
    die "apt-get install postgresql failed (log: $pg_run_dir/apt.log)"
  fi
  bindir=$(pg_find_bindir)
  [[ -n $bindir ]] || die "postgresql installed, but still no initdb under /usr/lib/postgresql/*/bin"
fi

# --- The OS user the server runs as (root only; otherwise the server runs as the caller). ---
if pg_is_root && ! id -u "$pg_os_user" >/dev/null 2>&1; then
  nologin=/usr/sbin/nologin
  [[ -x $nologin ]] || nologin=/bin/false
  useradd --system --no-create-home --home-dir /nonexistent --shell "$nologin" --user-group \
    "$pg_os_user"
fi

# --- A fresh run dir: whatever ran from it before is stopped, its data wiped. ---
bash "$pg_here/stop.sh" >&2 # a leftover from an earlier run (stop.sh also drops a relocated dir)
pg_set_server_paths "$pg_run_dir"
cd / # the server user may not be able to enter the caller's cwd
mkdir -p "$pg_run_dir"
chmod 0755 "$pg_run_dir"
if pg_is_root && ! as_pg test -x "$pg_run_dir"; then
  pg_set_server_paths "$(mktemp -d /var/tmp/consentry-pg.XXXXXX)"
  chown "$pg_os_user:" "$pg_server_dir"
  echo "$pg_server_dir" >"$pg_server_pointer"
  echo "postgres: $pg_os_user cannot reach $pg_run_dir; the server's files go to $pg_server_dir" >&2
fi
rm -rf "$pg_data_dir" "$pg_sock_dir"
rm -f "$pg_run_dir/env" "$pg_pid_file" "$pg_log" "$pg_server_dir/superuser.password"
# The socket dir is 0700: local connections are trusted, so only the server user (and root) may
# reach the socket. Clients other than start.sh connect over TCP with passwords.
install -d -m 0700 "$pg_data_dir" "$pg_sock_dir"
: >"$pg_log"
superuser_pwfile=$pg_server_dir/superuser.password
(umask 077 && random_password >"$superuser_pwfile")
chmod 0600 "$superuser_pwfile"
if pg_is_root; then
  chown "$pg_os_user:" "$pg_data_dir" "$pg_sock_dir" "$pg_log" "$superuser_pwfile"
  if ! as_pg test -w "$pg_data_dir"; then
    # Name the first directory on the way that the server user cannot traverse.
    d=/
    IFS=/ read -ra parts <<<"${pg_data_dir#/}"
    for part in "${parts[@]}"; do
      d=${d%/}/$part
      as_pg test -x "$d" || break
    done
    die "user $pg_os_user cannot reach $pg_data_dir (no search permission on $d); set CONSENTRY_RUN_DIR elsewhere or chmod o+x the path"
  fi
fi
# Unix socket paths are limited to 107 bytes.
sock_file=$pg_sock_dir/.s.PGSQL.65535
((${#sock_file} <= 107)) || die "socket path under $pg_sock_dir is too long for a unix socket; set a shorter CONSENTRY_RUN_DIR"

# --- The cluster. ---
# --no-sync only skips flushing initdb's own files (a cluster that is wiped at every start anyway);
# the server itself runs with fsync on.
as_pg "$bindir/initdb" -D "$pg_data_dir" -U postgres --pwfile="$superuser_pwfile" \
  --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync \
  >"$pg_run_dir/initdb.log" 2>&1 ||
  { cat "$pg_run_dir/initdb.log" >&2; die "initdb failed"; }
as_pg tee -a "$pg_data_dir/postgresql.conf" >/dev/null <<EOF

# --- Consentry (infra/postgres/start.sh) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pg_sock_dir'
EOF

# The system python3 if there is one: it starts faster than a pyenv shim.
python=$(command -v /usr/bin/python3 || command -v python3) || die "python3 is needed to pick a free port"
free_port() {
  "$python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# From here on a failure stops the server again: nobody else would (with-services.sh only stops
# what started successfully).
ready=0
trap '[[ $ready == 1 ]] || bash "$pg_here/stop.sh" >&2 || true' EXIT

# The port is free when picked but may be taken before the server binds it: then pick another.
for attempt in 1 2 3; do
  port=$(free_port)
  : >"$pg_log"
  if as_pg "$bindir/pg_ctl" -D "$pg_data_dir" -l "$pg_log" -o "-p $port -k '$pg_sock_dir'" \
    -w -t 60 -s start; then
    break
  fi
  if ((attempt < 3)) && grep -q "could not bind\|Address already in use" "$pg_log"; then
    continue
  fi
  tail -n 30 "$pg_log" >&2
  die "pg_ctl start failed (log: $pg_log)"
done
head -n 1 "$pg_data_dir/postmaster.pid" >"$pg_pid_file"

# --- Database, schemas, roles. ---
roles=(owner ledger processors query shredder)
declare -A password
for role in "${roles[@]}"; do
  password[$role]=$(random_password)
done
# Passwords go in on stdin, not on the command line where `ps` would show them.
{
  for role in "${roles[@]}"; do printf '\\set %s_password %s\n' "$role" "${password[$role]}"; done
  cat "$pg_here/roles.sql"
} | "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$pg_sock_dir" -p "$port" -U postgres -d postgres \
  -f - >"$pg_run_dir/roles.log" 2>&1 ||
  { cat "$pg_run_dir/roles.log" >&2; die "roles.sql failed"; }

# --- What the tests need to connect. ---
(
  umask 077
  {
    echo "CONSENTRY_PG_HOST=127.0.0.1"
    echo "CONSENTRY_PG_PORT=$port"
    echo "CONSENTRY_PG_DATABASE=consentry"
    echo "CONSENTRY_PG_DATA_DIR=$pg_data_dir"
    for role in "${roles[@]}"; do
      echo "CONSENTRY_PG_DSN_${role^^}=postgresql://consentry_$role:${password[$role]}@127.0.0.1:$port/consentry"
    done
  } >"$pg_run_dir/env.tmp"
)
chmod 0600 "$pg_run_dir/env.tmp"
mv "$pg_run_dir/env.tmp" "$pg_run_dir/env"
ready=1

elapsed_ms=$((($(date +%s%N) - started_ns) / 1000000))
echo "postgres $("$bindir/postgres" --version | awk '{print $3}') listening on 127.0.0.1:$port" \
  "(pid $(cat "$pg_pid_file"), data $pg_data_dir), started in $((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))s"
