#!/usr/bin/env bash
# `make bench`: builds the worker in release mode, starts a throw-away broker on a
# free port (and a private PostgreSQL when a postgres pass is asked for), and runs
# `trigger-worker bench`, which measures the worker against a raw consumer baseline
# and a publish-only ceiling in the same run and prints rates and ratios.
#   BENCH_COUNT=N      requests per pass (default 100000)
#   BENCH_STORE=both   sqlite (default), postgres, or both (then also the ratio
#                      between them and a pass with one and two worker processes)
#   STORE_URL=postgres://…  measure on that server (a database per pass is created
#                      on it) instead of starting a private PostgreSQL
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
store=${BENCH_STORE:-sqlite}
case "${STORE_URL:-}" in postgres://*|postgresql://*) [ "$store" = sqlite ] && store=postgres ;; esac
case "$store" in
  sqlite) stores=sqlite ;;
  postgres) stores=postgres ;;
  both) stores=sqlite,postgres ;;
  *) echo "bench: BENCH_STORE must be sqlite, postgres or both" >&2; exit 2 ;;
esac
echo "==> building (release)"
swift build -c release --product trigger-worker || exit $?
scratch=$(mktemp -d "${TMPDIR:-/tmp}/trigger-worker-bench.XXXXXX")
port=""
cleanup() {
  [ -n "$port" ] && scripts/broker.sh stop "$port"
  scripts/postgres.sh stop "$scratch/postgres"
  rm -rf "$scratch"
}
trap cleanup EXIT
port=$(scripts/broker.sh start 0) || exit 1
export KAFKA_BROKERS="127.0.0.1:$port"
if [[ "$stores" == *postgres* ]]; then
  case "${STORE_URL:-}" in
    postgres://*|postgresql://*) export BENCH_POSTGRES_URL="$STORE_URL" ;;
    *) BENCH_POSTGRES_URL=$(scripts/postgres.sh start "$scratch/postgres") || exit 1; export BENCH_POSTGRES_URL ;;
  esac
fi
unset STORE_URL
# Short group timeouts: the local broker holds a first JoinGroup up to the rebalance timeout.
export RDKAFKA_MAX_POLL_INTERVAL_MS=${RDKAFKA_MAX_POLL_INTERVAL_MS:-10000}
export RDKAFKA_SESSION_TIMEOUT_MS=${RDKAFKA_SESSION_TIMEOUT_MS:-6000}
.build/release/trigger-worker bench --count "${BENCH_COUNT:-100000}" --stores "$stores"
