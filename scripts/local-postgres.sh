#!/usr/bin/env bash
# make stop / make wipe: the embedded PostgreSQL of the local directory ($KILLSTREAM_LOCAL_DIR,
# else .local), without the venv (a fresh clone, or after make clean, has none).
#   stop  stop the server if it runs (its data stays)
#   wipe  stop it, then delete its data, password, port and log, and the saved run (its cursor
#         and queued messages belong to the data): the next make run starts empty
# The server is signalled directly (SIGINT: PostgreSQL's fast shutdown) rather than through
# pg_ctl, which refuses to run as root, where the server runs as the postgres user.
set -euo pipefail
action=${1:-}
local_dir=${KILLSTREAM_LOCAL_DIR:-.local}
data="$local_dir/postgres"

running_pid() {  # the postmaster's pid when it is running, else nothing
  local pid
  [ -f "$data/postmaster.pid" ] || return 0
  pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  kill -0 "$pid" 2>/dev/null || return 0
  case "$(ps -p "$pid" -o comm= 2>/dev/null || true)" in *postgres* | *postmaster*) echo "$pid" ;; esac
}

stop() {
  local pid
  pid=$(running_pid)
  if [ -z "$pid" ]; then
    echo "embedded PostgreSQL is not running ($data)"
    return 0
  fi
  kill -INT "$pid"
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || { echo "embedded PostgreSQL stopped (pid $pid; its data stays in $data)"; return 0; }
    sleep 0.1
  done
  echo "embedded PostgreSQL (pid $pid) did not stop within 60 s; its log: $local_dir/postgres.log" >&2
  return 1
}

case "$action" in
  stop)
    stop
    ;;
  wipe)
    if command -v flock >/dev/null 2>&1 && [ -f "$local_dir/run.lock" ] && ! flock -n "$local_dir/run.lock" true; then
      echo "make wipe: a killstream run is using $local_dir (pid $(cat "$local_dir/run.lock")): stop it first" >&2
      exit 1
    fi
    [ -z "$(running_pid)" ] || stop
    if [ ! -e "$data" ] && [ ! -e "$local_dir/postgres.password" ] && [ ! -e "$local_dir/run-state.json" ]; then
      echo "nothing to wipe: no local database in $local_dir"
      exit 0
    fi
    rm -rf -- "$data" "$local_dir/postgres.password" "$local_dir/postgres.port" "$local_dir/postgres.log" \
      "$local_dir/run-state.json" "$local_dir/stack.json"
    echo "local database wiped: removed $data (and its password, port, log and saved run); the next make run starts empty"
    ;;
  *)
    echo "usage: $0 stop|wipe" >&2
    exit 2
    ;;
esac
