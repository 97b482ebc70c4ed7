#!/usr/bin/env bash
# `make run`: uses the broker answering on 127.0.0.1:9092, or starts one there
# (and stops it again when the worker exits), then runs the worker with the demo
# org and workflows of examples/ on the embedded SQLite store. Ctrl-C stops it
# gracefully (offsets committed, group left, producer flushed).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

PORT=9092
started=""
if scripts/broker.sh answers "$PORT"; then
  echo "==> using the broker already answering on 127.0.0.1:$PORT"
else
  scripts/broker.sh start "$PORT" >/dev/null || exit 1
  started=$PORT
fi
cleanup() { [ -n "$started" ] && scripts/broker.sh stop "$started"; }
trap cleanup EXIT

export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:$PORT}
export WORKFLOWS_DIR=${WORKFLOWS_DIR:-examples/workflows}
export ORGS_FILE=${ORGS_FILE:-examples/orgs.yaml}
# The local broker holds a first JoinGroup up to the rebalance timeout, which
# librdkafka takes from max.poll.interval.ms: keep both short for a quick join.
export RDKAFKA_MAX_POLL_INTERVAL_MS=${RDKAFKA_MAX_POLL_INTERVAL_MS:-6000}
export RDKAFKA_SESSION_TIMEOUT_MS=${RDKAFKA_SESSION_TIMEOUT_MS:-6000}
export LOG_FORMAT=${LOG_FORMAT:-text}

echo "==> trigger-worker run (brokers $KAFKA_BROKERS; Ctrl-C to stop)"
# In the foreground, so Ctrl-C reaches the worker, which shuts down gracefully;
# the EXIT trap then stops the broker if we started it.
.build/debug/trigger-worker run
