# trigger-worker: `make run` and `make test` work from a fresh clone on Debian or
# Ubuntu (as root or with sudo); both install what is missing first.
SHELL := /bin/bash
# librdkafka built from source lands in /usr/local; make sure SwiftPM finds it.
export PKG_CONFIG_PATH := /usr/local/lib/pkgconfig:$(PKG_CONFIG_PATH)

SWIFT_BUILD_FLAGS ?=

.PHONY: all deps build run run-cluster test bench validate validate-compose clean

all: build

## deps: install librdkafka >= 2.3 and the local broker when missing
deps:
	@scripts/install-deps.sh

## build: build the worker (debug)
build: deps
	swift build $(SWIFT_BUILD_FLAGS)

## run: start a local broker on 127.0.0.1:9092 when none answers, then the worker with the demo org
run: build
	@scripts/run-local.sh

## run-cluster: two workers in one group on one private PostgreSQL, on the local broker (Ctrl-C stops all)
run-cluster: build
	@scripts/run-cluster.sh

## test: start a throw-away broker and a private PostgreSQL, validate the compose file, run every test, stop both
test: deps
	@scripts/test.sh

## bench: worker throughput as a ratio to a raw consumer, measured in one run (BENCH_COUNT=N)
bench: deps
	@scripts/bench.sh

## validate: check the demo org and workflows
validate: build
	.build/debug/trigger-worker validate --workflows examples/workflows --orgs examples/orgs.yaml

## validate-compose: check docker/compose.yaml against the Compose Specification schema (no Docker needed)
validate-compose:
	@scripts/validate-compose.sh

clean:
	rm -rf .build .broker
