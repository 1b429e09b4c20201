# Fabric: the front door. `make` lists the targets.
SHELL := /bin/bash
SWIFT ?= $(shell command -v swift || echo /opt/swift/usr/bin/swift)
CONFIG ?= debug
BIN := .build/$(CONFIG)
BIN_RELEASE := .build/release
ARGS ?=
SHUTTLE_ARGS ?=
export SHUTTLE_ARGS
SEED ?= 1
RUNS ?= 20
SIM_ARGS ?=
# The batches `make sim` writes for the lower bound (a --cost-batches FILE in SIM_ARGS takes its place).
SIM_COST ?= .tmp/sim-cost.jsonl
PYTHON ?= .venv/bin/python

.DEFAULT_GOAL := help
.PHONY: help bootstrap build release weaver shuttle run test test-unit test-integration bench bench-api bench-actors \
	bench-scheduler bench-cost fmt lint clean sim sim-swarm

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

bootstrap: ## install the Debian packages Fabric needs (idempotent)
	@./scripts/bootstrap

build: bootstrap ## build everything (debug)
	$(SWIFT) build

release: bootstrap ## build everything optimised
	$(SWIFT) build -c release

weaver: bootstrap ## build the control plane binary
	$(SWIFT) build --product weaver && $(SWIFT) build --product fabric-monitor

shuttle: bootstrap ## build the node runner binary
	$(SWIFT) build --product shuttle && $(SWIFT) build --product fabric-monitor

run: bootstrap ## build, then start nats-server, weaver (127.0.0.1:8080, SQLite under .data) and a local shuttle
	$(SWIFT) build -c release --product weaver
	$(SWIFT) build -c release --product shuttle
	$(SWIFT) build -c release --product fabric-monitor
	./scripts/run $(ARGS)

test: bootstrap ## build and run every test (starts its own PostgreSQL)
	./scripts/test

test-unit: bootstrap ## run the tests that need no server
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip IntegrationTests

test-integration: bootstrap ## run the tests that start real servers and binaries
	./scripts/test --filter IntegrationTests

bench: bench-api bench-actors bench-scheduler bench-cost ## run every benchmark

bench-api: bootstrap ## wrk against weaver (SQLite, PostgreSQL), a bare libmicrohttpd responder and nginx
	./scripts/bench-api

bench-actors: bootstrap ## calls/s, p50, p99 of distributed-actor round trips over NATS beside raw cnats requests, and in one process
	$(SWIFT) build -c release --build-tests -Xswiftc -enable-testing
	FABRIC_BENCH_ACTORS=1 $(SWIFT) test -c release --skip-build --filter ActorBenchmarks

bench-scheduler: bootstrap ## placements/s and decision latency at 1,000-10,000 nodes, 10% and 90% fill, beside select
	$(SWIFT) build -c release --product fabric-bench-scheduler
	$(BIN_RELEASE)/fabric-bench-scheduler $(ARGS)

bench-cost: bootstrap ## $/h of standard batches (BatchPlanner, one machine each, naive) against a lower bound (HiGHS)
	$(SWIFT) build -c release --product fabric-bench-cost
	mkdir -p .tmp && $(BIN_RELEASE)/fabric-bench-cost --out .tmp/cost-batches.jsonl $(ARGS)
	.venv/bin/python scripts/cost-bound --max-ratio 1.03 .tmp/cost-batches.jsonl

sim: ## run the deterministic fleet simulation with one seed (SEED=N, SIM_ARGS="--nodes 1000 --duration 6h"), then the lower bound (HiGHS) on its batches
	$(SWIFT) build -c release --product fabric-sim
	@file=$$(echo " $(SIM_ARGS) " | sed -n 's/.* --cost-batches \([^ ]*\) .*/\1/p'); file=$${file:-$(SIM_COST)}; \
	mkdir -p "$$(dirname "$$file")"; \
	$(BIN_RELEASE)/fabric-sim --seed $(SEED) --cost-batches "$$file" $(SIM_ARGS) || exit $$?; \
	if ! grep -q '"markets"' "$$file" 2>/dev/null; then echo "cost-bound: skipped, the run wrote no batches (--service, --batch off, or nothing needed a new machine)"; \
	elif ! [ -x $(PYTHON) ] || ! $(PYTHON) -c 'import highspy' 2>/dev/null; then \
		echo "cost-bound: skipped, $(PYTHON) with highspy is missing (run scripts/bootstrap, or PYTHON=...)"; \
	else echo "cost-bound (lower bound, HiGHS) on $$file:"; $(PYTHON) scripts/cost-bound --summary --max-ratio 1.03 "$$file"; fi

sim-swarm: ## run seeds 1..RUNS (RUNS=N), stop at the first failure and print its reproduce line, then the lower bound on all their batches
	$(SWIFT) build -c release --product fabric-sim
	@rm -rf .tmp/sim-swarm && mkdir -p .tmp/sim-swarm; \
	for seed in $$(seq 1 $(RUNS)); do \
		out=$$($(BIN_RELEASE)/fabric-sim --seed $$seed --quiet --cost-batches .tmp/sim-swarm/seed-$$seed.jsonl $(SIM_ARGS) 2>&1); rc=$$?; \
		if [ $$rc -ne 0 ]; then echo "$$out"; echo "sim-swarm: seed $$seed failed"; exit 1; fi; \
		echo "seed $$seed ok $$(echo "$$out" | tail -n 1)"; \
	done; echo "sim-swarm: $(RUNS) seeds passed"; \
	if ! cat .tmp/sim-swarm/*.jsonl 2>/dev/null | grep -q '"markets"'; then echo "cost-bound: skipped, the runs wrote no batches (--service, --batch off, or nothing needed a new machine)"; \
	elif ! [ -x $(PYTHON) ] || ! $(PYTHON) -c 'import highspy' 2>/dev/null; then \
		echo "cost-bound: skipped, $(PYTHON) with highspy is missing (run scripts/bootstrap, or PYTHON=...)"; \
	else echo "cost-bound (lower bound, HiGHS) on the batches of all $(RUNS) seeds:"; \
		$(PYTHON) scripts/cost-bound --summary --max-ratio 1.03 .tmp/sim-swarm/*.jsonl; fi

fmt: ## format the code with the checked-in .swift-format
	$(SWIFT) format -i -r Sources Tests Simulation Benchmarks Package.swift

lint: ## check formatting
	$(SWIFT) format lint -r Sources Tests Simulation Benchmarks Package.swift

clean: ## remove build outputs and local state
	rm -rf .build .data .tmp
