#!/usr/bin/env bash
# `make run-cluster`: two worker instances in one consumer group, sharing one
# PostgreSQL store, on the local broker. Uses the broker answering on
# 127.0.0.1:9092 or starts one there, starts a private PostgreSQL cluster in
# data/cluster-postgres (scripts/postgres.sh), applies the store's migrations, then
# runs two workers with the demo org and workflows of examples/, their output
# prefixed [worker-1] and [worker-2]. Ctrl-C stops both workers gracefully
# (SIGTERM, then waits), then the database, then the broker if this script started it.
#
# The database outlives the run (data/cluster-postgres); the local broker keeps
# nothing. A new broker with an old database is a reset log for the worker: it logs
# the reset at error level and reads the partitions again. Remove
# data/cluster-postgres to start from an empty store.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

PORT=9092
PG_DIR=data/cluster-postgres
WORKER=${TRIGGER_WORKER_BIN:-.build/debug/trigger-worker}
# The worker ends a shutdown within SHUTDOWN_GRACE (30s by default); past this, it is killed.
STOP_WAIT_SECONDS=${STOP_WAIT_SECONDS:-40}

[ -x "$WORKER" ] || { echo "run-cluster: $WORKER is missing: run 'make build' (or 'make run-cluster')" >&2; exit 1; }

broker_started=""
pg_started=""
pids=()

stop_workers() {
  local pid alive=()
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
  [ ${#alive[@]} -gt 0 ] || return 0
  echo "==> stopping the workers (SIGTERM to ${alive[*]})" >&2
  kill -TERM "${alive[@]}" 2>/dev/null
  local waited=0
  while [ $waited -lt $((STOP_WAIT_SECONDS * 10)) ]; do
    local still=()
    for pid in "${alive[@]}"; do kill -0 "$pid" 2>/dev/null && still+=("$pid"); done
    [ ${#still[@]} -gt 0 ] || break
    sleep 0.1
    waited=$((waited + 1))
  done
  for pid in "${alive[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "run-cluster: worker $pid still running after ${STOP_WAIT_SECONDS}s: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  done
  # Reap them (and their log prefixers) so nothing prints after the summary.
  wait 2>/dev/null
}

cleanup() {
  # A second Ctrl-C must not cut the clean-up short (it is bounded by STOP_WAIT_SECONDS).
  trap '' INT TERM
  trap - EXIT
  stop_workers
  if [ -n "$pg_started" ]; then
    echo "==> stopping PostgreSQL ($PG_DIR)" >&2
    scripts/postgres.sh stop "$PG_DIR"
  fi
  [ -n "$broker_started" ] && scripts/broker.sh stop "$broker_started"
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

if scripts/broker.sh answers "$PORT"; then
  echo "==> using the broker already answering on 127.0.0.1:$PORT"
else
  scripts/broker.sh start "$PORT" >/dev/null || exit 1
  broker_started=$PORT
fi

STORE_URL=$(scripts/postgres.sh start "$PG_DIR") || { echo "run-cluster: could not start PostgreSQL" >&2; exit 1; }
pg_started=1

export STORE_URL
export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:$PORT}
export KAFKA_GROUP_ID=${KAFKA_GROUP_ID:-trigger-worker}
export WORKFLOWS_DIR=${WORKFLOWS_DIR:-examples/workflows}
export ORGS_FILE=${ORGS_FILE:-examples/orgs.yaml}
# The local broker holds a first JoinGroup up to the rebalance timeout, which
# librdkafka takes from max.poll.interval.ms: keep both short for quick joins and
# a quick take-over when an instance dies.
export RDKAFKA_MAX_POLL_INTERVAL_MS=${RDKAFKA_MAX_POLL_INTERVAL_MS:-6000}
export RDKAFKA_SESSION_TIMEOUT_MS=${RDKAFKA_SESSION_TIMEOUT_MS:-6000}
export LOG_FORMAT=${LOG_FORMAT:-text}
# Two instances on one machine: no HTTP port to share.
export HTTP_PORT=0

echo "==> trigger-worker migrate (store $STORE_URL)"
"$WORKER" migrate || { echo "run-cluster: migrate failed" >&2; exit 1; }

# Each worker in its own session (setsid), so Ctrl-C reaches only this script, which
# stops them in order; its output goes through a prefixer that ignores Ctrl-C, so
# the workers' last log lines are not lost. $! is the worker's own pid.
for n in 1 2; do
  setsid "$WORKER" run </dev/null > >(trap '' INT; exec sed -u "s/^/[worker-$n] /") 2>&1 &
  pids+=($!)
done

cat <<EOF
==> two workers in group $KAFKA_GROUP_ID (brokers $KAFKA_BROKERS; Ctrl-C stops everything):
    worker-1  pid ${pids[0]}
    worker-2  pid ${pids[1]}
    Try fail-over from another terminal: kill -9 ${pids[0]}, then, after the rebalance
    (about ${RDKAFKA_SESSION_TIMEOUT_MS} ms), send a request; the survivor takes it:
      export RDKAFKA_MAX_POLL_INTERVAL_MS=6000 RDKAFKA_SESSION_TIMEOUT_MS=6000
      export TRIGGER_WORKER_API_KEY=ak_test_demo0000000000000000000000000000000000000000000000000000
      $WORKER send vendor-created --org cborg_0f1e2d3c4b5a69788796a5b4c3d2e1f0 --tag processes_pii
      $WORKER send workflow-run --workflow quarterly-privacy-sweep \\
        --input '{"vendor_filter": {"tags": ["processes_pii"]}, "due_date": "2026-06-30"}' --idempotency-key failover-1
    Runs both instances wrote: STORE_URL=$STORE_URL $WORKER runs list
EOF

# Returns when both workers have exited (or on Ctrl-C, through the trap).
wait "${pids[@]}"
status=$?
echo "==> both workers have exited" >&2
exit $status
