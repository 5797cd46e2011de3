# kvsql: `make help` lists the targets.

GO          ?= go
CACHE       := $(CURDIR)/.cache
# etcdctl pinned in tools/etcdctl/go.mod, built once into the (gitignored)
# cache; `make test ETCDCTL=/path/to/etcdctl` uses another one instead.
ETCDCTL_BIN := $(CACHE)/bin/etcdctl
ETCDCTL     ?=
# etcdutl pinned in tools/etcdutl/go.mod (snapshot status/restore in the
# snapshot tests), built the same way; ETCDUTL=/path overrides it.
ETCDUTL_BIN := $(CACHE)/bin/etcdutl
ETCDUTL     ?=
# etcd pinned in tools/etcd/go.mod, built once into the cache for the scale
# benchmark (make bench-scale).
ETCD_BIN    := $(CACHE)/bin/etcd
# golangci-lint pinned here, built once into the cache (about 2 minutes
# cold); its configuration is .golangci.yml.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(CACHE)/bin/golangci-lint-$(GOLANGCI_LINT_VERSION)
TEST_FLAGS  := -race -count=1 -timeout 45m
ARGS        ?=
# make fuzz: how long each fuzz target runs, and the targets (package:name).
FUZZTIME    ?= 60s
FUZZ_TARGETS := ./kvserver:FuzzValidate ./integration:FuzzDiffRequest ./integration:FuzzDiffKeyValue ./integration:FuzzDiffTxn
GOFILES      = $(shell find . -name '*.go' -not -path './.cache/*' -not -path './.git/*')

.DEFAULT_GOAL := help
.PHONY: help build run test test-race test-deps etcdctl etcdutl kine kube-tools lint fmt bench bench-scale readme fuzz

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/kvsql (static: pure-Go SQLite driver, no cgo)
	CGO_ENABLED=0 $(GO) build -o bin/kvsql ./cmd/kvsql

run: ## run kvsql on the embedded SQLite default (./kvsql-data, 127.0.0.1:2379); flags in ARGS="..."
	$(GO) run ./cmd/kvsql $(ARGS)

etcdctl: ## build the pinned etcdctl into .cache/bin
	cd tools/etcdctl && $(GO) build -buildvcs=false -o $(ETCDCTL_BIN) go.etcd.io/etcd/etcdctl/v3

etcdutl: ## build the pinned etcdutl into .cache/bin
	cd tools/etcdutl && $(GO) build -buildvcs=false -o $(ETCDUTL_BIN) go.etcd.io/etcd/etcdutl/v3

kine: ## build the pinned kine (the migration tests' source) into ~/.cache/kvsql (once)
	bash scripts/kine.sh

kube-tools: ## build the pinned kube-apiserver and kubectl into ~/.cache/kvsql (once; ~10 min cold)
	bash scripts/kube-tools.sh

test-deps: ## install the database servers and tools the tests need (as root), or name them
	bash scripts/test-deps.sh

test: lint test-deps $(if $(ETCDCTL),,etcdctl) $(if $(ETCDUTL),,etcdutl) ## lint, then the whole suite with -race, the Kubernetes storage and kube-apiserver tests included (what CI runs)
	kine=$$(bash scripts/kine.sh) && ETCDCTL=$(or $(ETCDCTL),$(ETCDCTL_BIN)) ETCDUTL=$(or $(ETCDUTL),$(ETCDUTL_BIN)) \
		KINE=$$kine/kine $(GO) test $(TEST_FLAGS) ./...
	kube=$$(bash scripts/kube-tools.sh) && kine=$$(bash scripts/kine.sh) && cd integration/k8s && \
		KUBE_APISERVER=$$kube/kube-apiserver KUBECTL=$$kube/kubectl KINE=$$kine/kine $(GO) test $(TEST_FLAGS) ./...

test-race: test ## same as test

# One fuzz worker: every worker of an integration target starts its own etcd,
# PostgreSQL and MariaDB. A failing input is written to the target's
# testdata/fuzz/<target>/ and then runs in every `go test`.
fuzz: test-deps ## run each fuzz target for FUZZTIME (default 60s); `make test` runs only their corpora
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg), $(FUZZTIME)"; \
		$(GO) test -count=1 -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -parallel 1 $$pkg; \
	done

$(GOLANGCI_LINT):
	GOBIN=$(CACHE)/lint-build $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mkdir -p $(dir $@) && mv $(CACHE)/lint-build/golangci-lint $@

lint: $(GOLANGCI_LINT) ## gofmt -l, go vet and golangci-lint (.golangci.yml) on both modules
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd integration/k8s && $(GO) vet ./...
	$(GOLANGCI_LINT) run ./...
	cd integration/k8s && $(GOLANGCI_LINT) run --config ../../.golangci.yml ./...

fmt: ## gofmt -w the tree
	gofmt -w $(GOFILES)

bench: ## run the benchmarks (bench/run.sh)
	@if [ -f bench/run.sh ]; then bash bench/run.sh; else echo "bench/run.sh does not exist yet"; fi

$(ETCD_BIN):
	cd tools/etcd && $(GO) build -buildvcs=false -o $(ETCD_BIN) go.etcd.io/etcd/server/v3

bench-scale: $(ETCD_BIN) ## etcd and kvsql on SQLite, PostgreSQL and MariaDB at Kubernetes scale (bench/scale); flags in ARGS="-objects 200000"
	CGO_ENABLED=0 $(GO) build -o bin/kvsql ./cmd/kvsql
	$(GO) run ./bench/scale -etcd $(ETCD_BIN) -kvsql bin/kvsql $(ARGS)

readme: ## regenerate README.md's flags table from kvsql --help
	$(GO) test ./integration -run '^TestProcessReadmeFlags$$' -count=1 -update-readme
