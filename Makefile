# Parley build and test entry points. `make run` and `make test` are the two
# commands README.md promises; everything else is a step they use.

GO       ?= go
WEB      := client/web
BUF      := $(WEB)/node_modules/.bin/buf
BIN      := $(CURDIR)/bin
GRPCURL  := $(BIN)/grpcurl
GRPCURL_VERSION := v1.9.4
NATS_SERVER := $(BIN)/nats-server
NATS_SERVER_VERSION := v2.15.2
DATA_DIR ?= ./data
ADDR     ?= :8080
GOTEST_FLAGS ?= -race -count=1 -timeout 15m

.PHONY: bench cluster all build run test test-go generate check-generated lint-proto tools clean torture \
	web check-web test-web test-e2e chromium

all: build

# Node tooling (buf, protoc-gen-es) lives in client/web's node_modules.
$(WEB)/node_modules/.stamp: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund
	touch $@

tools: $(WEB)/node_modules/.stamp

$(GRPCURL):
	GOBIN=$(BIN) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

# The cluster tests run real nats-server processes (server/natstest).
$(NATS_SERVER):
	GOBIN=$(BIN) $(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)

lint-proto: tools
	$(BUF) lint

generate: tools lint-proto
	$(BUF) generate

# gen/ is committed; it must be exactly what the protos generate.
check-generated: generate
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
		echo "gen/ differs from what api/ generates; run 'make generate' and commit:"; \
		git status --porcelain -- gen; git --no-pager diff --stat -- gen; exit 1; \
	fi

# The browser app's built assets (client/web/dist) are committed, so that
# `go build ./...` works without Node; parleyd embeds them. They are rebuilt
# whenever their sources are newer (make build, make run). Without npm the
# committed build is used as it is.
WEB_SRC := $(shell find $(WEB)/src -type f 2>/dev/null) $(WEB)/build.mjs $(WEB)/package-lock.json $(wildcard gen/ts/parley/v1/*.ts)

$(WEB)/dist/index.html: $(WEB_SRC)
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory tools && cd $(WEB) && npm run --silent build; \
	else \
		echo "npm not found: using the committed build in $(WEB)/dist"; \
	fi

web: $(WEB)/dist/index.html

# dist/ is committed; it must be exactly what src/ builds (the build is
# deterministic).
check-web: tools
	cd $(WEB) && npm run --silent build
	@if [ -n "$$(git status --porcelain -- $(WEB)/dist)" ]; then \
		echo "$(WEB)/dist differs from what $(WEB)/src builds; run 'make web' and commit:"; \
		git status --porcelain -- $(WEB)/dist; exit 1; \
	fi

# Debian's Chromium for the end-to-end test (playwright-core drives it and
# never downloads a browser of its own).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji; \
	fi

# Type check and unit tests of the app's logic (outbox, dedup, positions,
# optimistic states).
test-web: tools
	cd $(WEB) && npm run --silent typecheck && npm run --silent test

# Two browser contexts chat through a real parleyd (bin/parleyd, restarted
# mid-test) and the parley CLI; screenshots land in client/web/test-results.
test-e2e: tools chromium build
	cd $(WEB) && npm run --silent e2e

build: web
	$(GO) build -o $(BIN)/parleyd ./server/cmd/parleyd
	$(GO) build -o $(BIN)/parley ./client/cmd/parley

run: build
	$(BIN)/parleyd --data-dir $(DATA_DIR) --addr $(ADDR)

# The performance suite: every target against Parley and the bare gRPC
# baseline in the same run (servers in child processes, fsync on). The table
# goes to the terminal; bench.md, bench.json, latency.svg and throughput.svg
# land in $(BENCH_OUT), which the README's Performance section shows.
BENCH_OUT ?= docs/bench
bench:
	$(GO) build -o $(BIN)/parley-bench ./client/cmd/parley-bench
	$(BIN)/parley-bench suite --out $(BENCH_OUT)

# Three nats-server processes (one JetStream cluster, fsync on every write)
# and three parleyd nodes on ports 8081-8083 sharing it; Ctrl-C stops them.
cluster: build $(NATS_SERVER)
	deploy/cluster/run.sh $(BIN)

test-go: $(GRPCURL) $(NATS_SERVER)
	$(GO) vet ./...
	PARLEY_GRPCURL=$(GRPCURL) PARLEY_NATS_SERVER=$(NATS_SERVER) $(GO) test $(GOTEST_FLAGS) ./...

test: check-generated check-web test-web test-go test-e2e

# The long forms of the reliability tests: 200 kill -9 rounds under load, a
# soak of connects, sends and disconnects, and each fuzz target for a while.
# Each prints its summary; torture.log keeps the whole run.
TORTURE_ROUNDS ?= 200
SOAK ?= 2m
FUZZTIME ?= 60s
torture:
	@set -e; : > torture.log; \
	$(GO) test -count=1 -timeout 60m -v -run 'TestCrashLosesNothingAcked' ./server/cmd/parleyd/ -crash-rounds=$(TORTURE_ROUNDS) >> torture.log 2>&1 || { tail -40 torture.log; exit 1; }; \
	$(GO) test -race -count=1 -timeout 30m -v -run 'TestSoakChurn|TestStuckClients|TestDiskFull' ./server/ -soak=$(SOAK) >> torture.log 2>&1 || { tail -40 torture.log; exit 1; }; \
	for t in server:FuzzChatFrame server:FuzzUnary server:FuzzGRPCWeb server/auth:FuzzVerify \
		server/store:FuzzDecodeBatch server/chat:FuzzNameShapes; do \
		p=$${t%%:*}; f=$${t#*:}; \
		$(GO) test -run XXX -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./$$p/ 2>&1 | tail -3 | sed "s/^/$$f: /" >> torture.log || exit 1; \
	done; \
	echo "== torture summary =="; grep -E "crash test:|soak:|slow reader|--- (PASS|FAIL)|Fuzz[A-Za-z]+: (fuzz: elapsed|ok|FAIL)" torture.log

clean:
	rm -rf $(BIN)
