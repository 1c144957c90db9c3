# Hearth build, test and dev entry points. `make dev` and `make test` install what is missing
# (Debian packages, Go tools, npm packages) before they run, so they work on a fresh Debian 12 box.

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Pinned generator versions: `make generate` must give the same output on every machine.
BUF_VERSION := v1.50.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION := v1.21.1

# Debian packages the tests and the platform need; installed only when a command is missing.
APT_PACKAGES := iproute2 nftables curl ca-certificates

.PHONY: all build envd hearth codeinterp runsc web-assets generate deps test test-base test-go test-fuzz test-e2e vet fmt bench bench-go dev clean

all: build

build: envd hearth codeinterp

envd:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/envd ./cmd/envd

# The code-interpreter server (:49999) injected into code-interpreter templates; static and
# stripped, like envd it runs inside sandboxes.
codeinterp:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/codeinterp ./cmd/codeinterp

hearth:
	$(GO) build -trimpath -o $(BIN)/hearth ./cmd/hearth

# The dashboard's browser libraries (xterm.js), copied from their npm packages (pinned in
# internal/web/assets/package-lock.json) into internal/web/static/vendor, which is committed
# and embedded: building hearth needs no npm. Run after changing the pins.
web-assets:
	cd internal/web/assets && npm ci --no-audit --no-fund --loglevel=error
	cp internal/web/assets/node_modules/@xterm/xterm/lib/xterm.js internal/web/assets/node_modules/@xterm/xterm/css/xterm.css \
	  internal/web/assets/node_modules/@xterm/addon-fit/lib/addon-fit.js internal/web/static/vendor/

# runsc (gVisor) is built from its Go module at a pinned version; see scripts/build-runsc.sh.
runsc:
	@./scripts/build-runsc.sh $(BIN)/runsc

$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-connect-go:
	GOBIN=$(BIN) $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_GO_VERSION)

generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-connect-go
	rm -rf internal/gen
	$(BIN)/buf generate

deps:
	@./scripts/deps.sh

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The privileged tests (gVisor, netns, PostgreSQL) must run, not skip, under `make test`.
test: export HEARTH_REQUIRE_RUNTIME := 1
test: export HEARTH_REQUIRE_POSTGRES := 1
test: deps build runsc vet test-base test-go test-fuzz test-e2e

# The base template, built once (debootstrap and apt: minutes) where the Go tests look for it;
# the packages that boot sandboxes and the e2e seed share it instead of each building their own.
test-base: build
	$(BIN)/hearth template build base --data-dir $${HEARTH_TEST_DATA:-/var/lib/hearth-test} --envd $(BIN)/envd

test-go:
	$(GO) test -race -count=1 -timeout 20m ./...

# Every fuzz target for FUZZTIME inputs (default 40000x) from its checked-in corpus.
test-fuzz:
	@./scripts/fuzz.sh

test-e2e: build runsc
	@./scripts/e2e.sh

# The platform benchmarks against a real hearth dev (docs/benchmarks.md); bench-go runs the
# package micro-benchmarks.
bench: deps build runsc
	./scripts/bench.sh

bench-go: deps build runsc
	$(GO) test -run '^$$' -bench . -benchtime 20x ./internal/envd/ ./internal/agent/ ./internal/uffd/
	$(GO) test -run '^$$' -bench List -benchtime 300x ./internal/store/sqlite/ ./internal/store/postgres/

dev: deps build runsc
	$(BIN)/hearth dev

clean:
	rm -rf $(BIN)
