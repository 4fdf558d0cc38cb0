# Parley build and test entry points. `make run` and `make test` are the two
# commands README.md promises; everything else is a step they use.

GO       ?= go
WEB      := client/web
BUF      := $(WEB)/node_modules/.bin/buf
BIN      := $(CURDIR)/bin
GRPCURL  := $(BIN)/grpcurl
GRPCURL_VERSION := v1.9.4
DATA_DIR ?= ./data
ADDR     ?= :8080
GOTEST_FLAGS ?= -race -count=1 -timeout 15m

.PHONY: all build run test test-go generate check-generated lint-proto tools clean

all: build

# Node tooling (buf, protoc-gen-es) lives in client/web's node_modules.
$(WEB)/node_modules/.stamp: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund
	touch $@

tools: $(WEB)/node_modules/.stamp

$(GRPCURL):
	GOBIN=$(BIN) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

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

build:
	$(GO) build -o $(BIN)/parleyd ./server/cmd/parleyd
	$(GO) build -o $(BIN)/parley ./client/cmd/parley

run: build
	$(BIN)/parleyd --data-dir $(DATA_DIR) --addr $(ADDR)

test-go: $(GRPCURL)
	$(GO) vet ./...
	PARLEY_GRPCURL=$(GRPCURL) $(GO) test $(GOTEST_FLAGS) ./...

test: check-generated test-go

clean:
	rm -rf $(BIN)
