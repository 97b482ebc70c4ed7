#!/usr/bin/env bash
# Runs every test against a throw-away broker: starts Tansu on a free loopback
# port, exports KAFKA_BROKERS, runs `swift test`, and stops the broker even when
# the tests fail. Exits with the tests' exit code.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

echo "==> building (tests included)"
swift build --build-tests || exit $?

port=$(scripts/broker.sh start 0) || { echo "test: could not start the broker" >&2; exit 1; }
trap 'scripts/broker.sh stop "$port"' EXIT
export KAFKA_BROKERS="127.0.0.1:$port"
echo "==> swift test against the broker at $KAFKA_BROKERS"
swift test --skip-build "$@"
