# pgmirror — run `make help` for the targets.
GO        ?= go
BIN       := bin/pgmirror
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
PKGS      := ./...
STATICCHECK_VERSION := v0.8.2

.DEFAULT_GOAL := help
.PHONY: help setup build test compat e2e check bench bench-quick bench-fanout bench-fanout-quick fuzz run clean demo-lab demo-lifecycle demo-profile demo-directory

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-19s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## install what a fresh Debian machine lacks (PostgreSQL, Redis, the compatibility suite's client libraries, promtool); no-op when present
	@scripts/setup

build: ## build bin/pgmirror
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

test: setup ## vet, the race-enabled test suite against throwaway PostgreSQL clusters, brief fuzzing
	$(GO) vet $(PKGS)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o /dev/null .
	$(GO) test -race -count=1 -timeout 8m $(PKGS)
	cd bench/chart && $(GO) vet ./... && $(GO) test -count=1 ./... # its own module (gonum's plot), outside ./...
	$(GO) test -run '^$$' -fuzz FuzzCommands -fuzztime 10s ./unixsock/
	$(GO) test -run '^$$' -fuzz FuzzParser -fuzztime 10s ./unixsock/
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 10s ./listener/

compat: setup ## the client-library compatibility suite alone, verbose: each library's cases against Redis and pgmirror, pending ones listed with their reason
	$(GO) test -count=1 -timeout 5m -run '^TestClientLibraries$$' -v ./compat/

e2e: ## headless-Chromium test of examples/profile: a click in one tab shows in another (installs chromium if missing)
	@scripts/setup --e2e
	$(GO) test -tags e2e -count=1 -timeout 5m -run '^TestE2E$$' -v ./examples/profile/

check: ## gofmt, go vet and staticcheck
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)
	cd bench/chart && $(GO) vet ./... && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

bench: setup build ## pgmirror side by side with Redis and pgbench (SPEC §8, ~10 min); rewrites BENCHMARKS.md's results
	@bench/run.sh

bench-quick: setup build ## a ~3-minute smoke run of make bench; prints the table, leaves BENCHMARKS.md alone
	@BENCH_QUICK=1 bench/run.sh

bench-fanout: setup build ## NOTIFY fan-out over 0-200 sidecars, packed vs per-row, grouped writes (~10 min); rewrites BENCHMARKS.md's fan-out results
	@bench/fanout.sh

bench-fanout-quick: setup build ## a ~2-minute smoke run of make bench-fanout (0, 1, 10 sidecars); prints the table only
	@BENCH_QUICK=1 bench/fanout.sh

fuzz: ## run the fuzz tests (payload decoder, RESP parser, command layer) for a minute each
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./listener/
	$(GO) test -run '^$$' -fuzz FuzzParser -fuzztime 60s ./unixsock/
	$(GO) test -run '^$$' -fuzz FuzzCommands -fuzztime 60s ./unixsock/

run: setup build ## the demo: pgmirror on ./pgmirror.sock over a throwaway Postgres in ./.pgdata (or PGMIRROR_DSN); Ctrl-C stops both
	@scripts/run-demo

demo-lab: setup ## the cache-aside lab's scenarios on pgmirror, printing the Postgres queries of each step (own throwaway Postgres; exits when done)
	$(GO) build -o bin/demo-lab ./examples/lab
	@bin/demo-lab

demo-profile: setup ## examples/profile with nothing else to start: throwaway Postgres, schema, watch, sidecar and the app on 127.0.0.1:8080 (PROFILE_ADDR); open it in two windows; Ctrl-C stops all
	$(GO) build -o bin/demo-profile ./examples/profile
	@bin/demo-profile -demo

demo-directory: setup ## examples/directory with nothing else to start: throwaway Postgres, sample rows, watches, sidecar; asks who manages an employee before and after an SQL UPDATE; Ctrl-C stops all
	$(GO) build -o bin/demo-directory ./examples/directory
	@bin/demo-directory demo

demo-lifecycle: setup ## the seed's Postgres cache design live: three sidecars, a slow report refreshed ahead once across them, a stale refresh lock reclaimed after its holder is killed, cleanup; Ctrl-C stops all
	$(GO) build -o bin/demo-lifecycle ./examples/lifecycle
	@bin/demo-lifecycle

clean: ## remove build output and the demo's database
	rm -rf bin .pgdata .pgdata.initdb.log pgmirror.sock
