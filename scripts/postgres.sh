#!/usr/bin/env bash
# Starts and stops a private PostgreSQL cluster for `make test`, `make bench` and
# `make run-cluster`: initdb into a scratch directory, a free loopback port, a
# socket in that directory, trust authentication on loopback only. Nothing of the
# system's PostgreSQL (a service, its data directory) is used or touched.
#
#   scripts/postgres.sh start DIR [--scratch]
#                                    create (when missing) and start a cluster in DIR;
#                                    prints its URL (postgres://trigger@127.0.0.1:PORT/trigger).
#                                    --scratch: a cluster for tests, thrown away with DIR,
#                                    that never fsyncs (see below)
#   scripts/postgres.sh stop DIR     stop the cluster in DIR (fast shutdown)
#   scripts/postgres.sh bin          prints the directory of the server binaries
#
# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres`
# user (created by Debian's package) and every server command runs as that user.
# Debian's `postgresql` package is installed when no server binaries are found.
set -euo pipefail

fail() { printf 'postgres: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

server_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  done
  return 1
}

ensure_server() {
  server_bin >/dev/null && return 0
  command -v apt-get >/dev/null 2>&1 || fail "no PostgreSQL server binaries under /usr/lib/postgresql and no apt-get: install PostgreSQL >= 13, then run again"
  printf '==> installing Debian'"'"'s postgresql (server binaries for the tests)\n' >&2
  $SUDO apt-get update -qq >&2 || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
    || fail "apt-get install postgresql failed; install it by hand, then run again"
  server_bin >/dev/null || fail "postgresql was installed but no initdb was found under /usr/lib/postgresql"
}

# Runs a server command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir=${1:?usage: postgres.sh start DIR [--scratch]}
  local durability=""
  case "${2:-}" in
    "") ;;
    # The test suite creates a database per store test (about 8 MB of files each)
    # and drops some: every DROP DATABASE forces a checkpoint that fsyncs the files of
    # all of them. Measured beside a loaded suite: checkpoints of 11,000 files taking
    # 13-14 s, and one DROP DATABASE that waited 76 s. The tests are about the store's
    # semantics; the server is never crashed under them (a killed worker is not a killed
    # server), so its fsyncs buy the tests nothing and cost them stalls.
    --scratch) durability="-c fsync=off -c full_page_writes=off" ;;
    *) fail "usage: postgres.sh start DIR [--scratch]" ;;
  esac
  ensure_server
  local bin; bin=$(server_bin)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$(id -u)" -eq 0 ] && { as_owner true; chown postgres "$dir"; chmod 700 "$dir"; }
  # The owner must be able to reach the directory through its parents.
  [ "$(id -u)" -eq 0 ] && { local up=$dir; while up=$(dirname "$up"); [ "$up" != / ]; do chmod o+x "$up" 2>/dev/null || true; done; }
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -U trigger --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || as_owner "$bin/initdb" -D "$dir/data" -U trigger --auth=trust --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
      || { tail -n 20 "$dir/initdb.log" >&2; fail "initdb failed (log above)"; }
  fi
  local port; port=$(free_port)
  # Tuned for tests and benchmarks on a small machine: fsync stays on (durability is
  # what the store promises, and the benchmark pays for it) unless --scratch, shared
  # buffers modest, a socket only in DIR.
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB $durability" start >/dev/null \
    || { tail -n 20 "$dir/server.log" >&2; fail "the server did not start (log above, full log in $dir/server.log)"; }
  echo "$port" > "$dir/port"
  "$bin/psql" -h 127.0.0.1 -p "$port" -U trigger -d postgres -qAtc "SELECT 1 FROM pg_database WHERE datname = 'trigger'" | grep -q 1 \
    || "$bin/psql" -h 127.0.0.1 -p "$port" -U trigger -d postgres -qc "CREATE DATABASE trigger" >/dev/null \
    || fail "could not create the database"
  printf 'postgres: PostgreSQL listening on 127.0.0.1:%s (data %s/data, log %s/server.log)\n' "$port" "$dir" "$dir" >&2
  echo "postgres://trigger@127.0.0.1:$port/trigger"
}

stop() {
  local dir=${1:?usage: postgres.sh stop DIR}
  [ -f "$dir/data/postmaster.pid" ] || return 0
  local bin; bin=$(server_bin) || return 0
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) [ $# -le 3 ] || fail "usage: postgres.sh start DIR [--scratch]"; start "${2:-}" "${3:-}" ;;
  stop) stop "${2:-}" ;;
  bin) ensure_server; server_bin ;;
  *) fail "usage: postgres.sh start DIR [--scratch] | stop DIR | bin" ;;
esac
