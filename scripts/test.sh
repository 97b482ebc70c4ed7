#!/usr/bin/env bash
# Runs every test against a throw-away broker: starts Tansu on a free loopback
# port, exports KAFKA_BROKERS, runs `swift test`, and stops the broker even when
# the tests fail. The tests' databases go to a temporary directory of the run,
# removed at the end. Exits with the tests' exit code.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

echo "==> building (tests included)"
swift build --build-tests || exit $?

port=$(scripts/broker.sh start 0) || { echo "test: could not start the broker" >&2; exit 1; }
scratch=$(mktemp -d "${TMPDIR:-/tmp}/trigger-worker-tests.XXXXXX")
trap 'scripts/broker.sh stop "$port"; rm -rf "$scratch"' EXIT
export KAFKA_BROKERS="127.0.0.1:$port"
# Every test database and worker store lands here (FileManager's temporaryDirectory).
export TMPDIR="$scratch"
echo "==> swift test against the broker at $KAFKA_BROKERS"
swift test --skip-build "$@"
