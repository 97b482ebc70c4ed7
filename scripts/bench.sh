#!/usr/bin/env bash
# `make bench`: builds the worker in release mode, starts a throw-away broker on a
# free port, and runs `trigger-worker bench`, which measures the worker against a
# raw consumer baseline in the same run and prints both rates and their ratio.
#   BENCH_COUNT=N (default 100000) requests per pass.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
echo "==> building (release)"
swift build -c release --product trigger-worker || exit $?
port=$(scripts/broker.sh start 0) || exit 1
trap 'scripts/broker.sh stop "$port"' EXIT
export KAFKA_BROKERS="127.0.0.1:$port"
# Short group timeouts: the local broker holds a first JoinGroup up to the rebalance timeout.
export RDKAFKA_MAX_POLL_INTERVAL_MS=${RDKAFKA_MAX_POLL_INTERVAL_MS:-10000}
export RDKAFKA_SESSION_TIMEOUT_MS=${RDKAFKA_SESSION_TIMEOUT_MS:-6000}
.build/release/trigger-worker bench --count "${BENCH_COUNT:-100000}"
