# LLM Budget Guard: the commands a newcomer needs, on a fresh Debian machine.
#   make test     everything: venv, redis-server, redis-sentinel, test binaries, lint, types,
#                 layers, Go checks, tests
#   make cluster  a real Redis and Kubernetes API server in the foreground, for humans
#                 (docs/install.md's local quick start begins here)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

include tools/versions.env
export BUDGET_GUARD_KUBE_VERSION := $(KUBE_VERSION)
export BUDGET_GUARD_HELM_VERSION := $(HELM_VERSION)
export BUDGET_GUARD_PROMETHEUS_VERSION := $(PROMETHEUS_VERSION)

.PHONY: help
help:
	@echo "make demo     the guard on example budgets, a temporary Redis and sample traffic"
	@echo "make test     run everything (installs what is missing)"
	@echo "make cluster  start Redis and a Kubernetes API server in the foreground"
	@echo "make bench    run the benchmarks and write docs/benchmarks.md"
	@echo "make lint | typecheck | imports | go-checks | pytest   one step of make test"

# -- prerequisites ---------------------------------------------------------------

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: Python >= 3.11 is needed as '$(PYTHON)' (set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

.PHONY: venv
venv: $(STAMP)

# The wheels of the package's own dependencies, for the test that installs the built
# wheel into a fresh virtual environment without the network.
WHEELHOUSE := $(VENV)/wheelhouse
$(WHEELHOUSE)/.built: pyproject.toml constraints.txt | $(STAMP)
	$(BIN)/pip wheel --quiet -c constraints.txt -w $(WHEELHOUSE) .
	touch $@

.PHONY: wheelhouse
wheelhouse: $(WHEELHOUSE)/.built

.PHONY: redis-server
redis-server:
	@tools/install-apt-package.sh redis-server redis-server

.PHONY: redis-sentinel
redis-sentinel:
	@tools/install-apt-package.sh redis-sentinel redis-sentinel

.PHONY: curl
curl:
	@tools/install-apt-package.sh curl curl

.PHONY: wrk
wrk:
	@tools/install-apt-package.sh wrk wrk

.PHONY: test-binaries
test-binaries: $(STAMP)
	@tools/build-test-binaries.sh > $(VENV)/.test-bin-dir

# -- checks ----------------------------------------------------------------------

.PHONY: lint
lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

.PHONY: typecheck
typecheck: $(STAMP)
	$(BIN)/mypy

.PHONY: imports
imports: $(STAMP)
	$(BIN)/lint-imports

# envoy-driver's own checks: gofmt, go vet, and its self-test against fake servers.
.PHONY: go-checks
go-checks:
	cd tools/envoy-driver && test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	cd tools/envoy-driver && go vet ./... && go test ./...

.PHONY: pytest
pytest: $(STAMP) redis-server redis-sentinel curl test-binaries wheelhouse
	BUDGET_GUARD_TEST_BIN_DIR="$$(tail -n 1 $(VENV)/.test-bin-dir)" \
	BUDGET_GUARD_WHEELHOUSE="$(abspath $(WHEELHOUSE))" \
	BUDGET_GUARD_FORBID_SKIPS=1 \
	  $(BIN)/pytest $(PYTEST_ARGS)

.PHONY: test
test: lint typecheck imports go-checks pytest

# -- for humans ------------------------------------------------------------------

.PHONY: demo
demo: $(STAMP) redis-server
	$(BIN)/budget-guard demo --budgets examples/budgets

.PHONY: crds
crds: $(STAMP)
	$(BIN)/budget-guard crds --write crds
	$(BIN)/budget-guard crds --write charts/llm-budget-guard/files/crds

.PHONY: bench
bench: $(STAMP) redis-server wrk test-binaries
	BUDGET_GUARD_TEST_BIN_DIR="$$(tail -n 1 $(VENV)/.test-bin-dir)" \
	  $(BIN)/python -m bench

.PHONY: cluster
cluster: $(STAMP) redis-server test-binaries
	BUDGET_GUARD_TEST_BIN_DIR="$$(tail -n 1 $(VENV)/.test-bin-dir)" \
	  $(BIN)/python -m budget_guard.localservices
