#!/usr/bin/env bash
# Stops the cluster infra/postgres/start.sh started (fast shutdown: clients are disconnected).
# Silent when nothing runs. Signals only the postmaster recorded for this run dir, and only if it
# still is a postgres serving this data dir.
set -euo pipefail
# shellcheck source=infra/postgres/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
cd /

# The recorded postmaster pid, if that process is still ours: a postgres started on our data dir.
our_pid() {
  local pid
  [[ -f $pg_pid_file ]] || return 1
  pid=$(head -n 1 "$pg_pid_file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$pg_data_dir" || return 1
  echo "$pid"
}

# A server dir start.sh put outside the run dir goes with the server (it holds nothing else).
drop_server_dir() {
  if [[ -f $pg_server_pointer ]]; then
    if [[ $pg_server_dir == /var/tmp/consentry-pg.* ]]; then rm -rf "$pg_server_dir"; fi
    rm -f "$pg_server_pointer"
  fi
}

# Alive and not a zombie (an exited postmaster may wait a moment for init to reap it).
alive() {
  local _pid _comm state
  read -r _pid _comm state _ <"/proc/$1/stat" 2>/dev/null || return 1
  [[ $state != Z ]]
}

wait_gone() { # pid seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    alive "$1" || return 0
    sleep 0.1
  done
  return 1
}

# 1. pg_ctl, as the user the server runs as.
bindir=$(pg_find_bindir)
if [[ -n $bindir && -f $pg_data_dir/postmaster.pid ]] &&
  { ! pg_is_root || id -u "$pg_os_user" >/dev/null 2>&1; }; then
  if as_pg "$bindir/pg_ctl" -D "$pg_data_dir" status >/dev/null 2>&1; then
    if as_pg "$bindir/pg_ctl" -D "$pg_data_dir" -m fast -w -t 60 -s stop; then
      rm -f "$pg_pid_file"
      drop_server_dir
      echo "postgres stopped"
      exit 0
    fi
    echo "postgres: pg_ctl stop failed; signalling the postmaster" >&2
  fi
fi

# 2. Signals to the recorded postmaster: smart, fast, immediate shutdown, then SIGKILL (its
#    backends exit on their own when they notice the postmaster is gone).
if pid=$(our_pid); then
  for signal in TERM INT QUIT KILL; do
    kill -s "$signal" "$pid" 2>/dev/null || break
    case $signal in
      TERM) wait_gone "$pid" 5 && break ;;
      INT) wait_gone "$pid" 20 && break ;;
      *) wait_gone "$pid" 10 && break ;;
    esac
  done
  if alive "$pid"; then
    echo "postgres: postmaster $pid did not exit" >&2
    exit 1
  fi
  echo "postgres stopped (pid $pid, by signal)"
fi
rm -f "$pg_pid_file"
drop_server_dir
