#!/usr/bin/env bash
# Runs every test against a throw-away broker and a private PostgreSQL: starts
# Tansu on a free loopback port and a PostgreSQL cluster in a scratch directory
# (scripts/postgres.sh), exports KAFKA_BROKERS and TEST_POSTGRES_URL, validates
# docker/compose.yaml against the Compose Specification schema and schemas/ with
# scripts/schemas.sh, runs `swift test`,
# and stops the broker and the database even when the tests fail. The tests'
# databases go to the run's temporary directory, removed at the end. Exits with
# the first failure's exit code.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

echo "==> building (tests included)"
swift build --build-tests || exit $?

echo "==> checking docker/compose.yaml"
scripts/validate-compose.sh || exit $?

# Also installs the validator the integration tests use (scripts/schemas.py serve).
echo "==> checking schemas/"
scripts/schemas.sh check || exit $?

scratch=$(mktemp -d "${TMPDIR:-/tmp}/trigger-worker-tests.XXXXXX")
port=""
cleanup() {
  [ -n "$port" ] && scripts/broker.sh stop "$port"
  scripts/postgres.sh stop "$scratch/postgres"
  rm -rf "$scratch"
}
trap cleanup EXIT
port=$(scripts/broker.sh start 0) || { echo "test: could not start the broker" >&2; exit 1; }
postgres_url=$(scripts/postgres.sh start "$scratch/postgres" --scratch) || { echo "test: could not start PostgreSQL" >&2; exit 1; }
export KAFKA_BROKERS="127.0.0.1:$port"
export TEST_POSTGRES_URL="$postgres_url"
# Every test database and worker store lands here (FileManager's temporaryDirectory).
export TMPDIR="$scratch"
echo "==> swift test against the broker at $KAFKA_BROKERS and PostgreSQL at $TEST_POSTGRES_URL"
swift test --skip-build "$@"
