# inferledger: two commands for a newcomer.
#   make demo   the whole system on this machine, one paid loop, settled, claimed and audited
#   make test   every test: lint, types, contracts (Hardhat) and Python (real parts)
# Everything they need is installed by the targets below (virtualenv, npm packages, contracts).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
SOL_STAMP := artifacts/.compiled
PYTEST_ARGS ?=

.PHONY: help deps demo test test-contracts test-forge test-python lint lint-contracts contracts browser bench bench-quick bench-gas clean

help:
	@echo "make demo   - bring up the whole system and run the paid loop (needs Redis)"
	@echo "make test   - lint, type-check and run every test (needs Redis and PostgreSQL)"
	@echo "make lint   - ruff and mypy only"
	@echo "make bench  - every benchmark at two sizes, one table (bench-quick: small sizes)"

deps: $(PY_STAMP) $(NODE_STAMP) $(SOL_STAMP)

$(PY_STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

contracts: $(SOL_STAMP)

$(SOL_STAMP): $(NODE_STAMP) hardhat.config.js $(wildcard contracts/*.sol)
	./node_modules/.bin/hardhat compile --quiet
	@touch $@

demo: deps
	$(BIN)/inferledger demo $(DEMO_ARGS)

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test-contracts: $(SOL_STAMP)
	./node_modules/.bin/hardhat test

# Foundry invariant campaign, after showing that planted bugs make it fail (tests/forge/planted_bug.sh).
test-forge: $(NODE_STAMP)
	tests/forge/planted_bug.sh

# Slither on the Hardhat artifacts (settings in slither.config.json; triage in docs/security.md).
# It lives in its own virtual environment: slither-analyzer pins web3<8, which the services
# must not inherit from a lint tool.
SLITHER_VENV := .venv-slither
SLITHER_STAMP := $(SLITHER_VENV)/.installed

$(SLITHER_STAMP):
	$(PYTHON) -m venv $(SLITHER_VENV)
	$(SLITHER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SLITHER_VENV)/bin/python -m pip install --quiet slither-analyzer==0.11.6
	@touch $@

lint-contracts: $(SOL_STAMP) $(SLITHER_STAMP)
	rm -rf artifacts cache/solidity-files-cache.json  # no stale build-info or sources
	./node_modules/.bin/hardhat compile --quiet
	@touch $(SOL_STAMP)
	$(SLITHER_VENV)/bin/slither . --fail-medium

# Debian's headless Chromium for the explorer's browser tests (tests/explorer/, driven by
# Playwright without its own browser download). Installed only where /usr/bin/chromium is
# missing: as root (CI); otherwise it says what to run, and the browser tests fail saying
# so (or skip with INFERLEDGER_TEST_SKIP_MISSING=1) while every other test still runs.
CHROMIUM_PACKAGES := chromium fonts-dejavu-core

browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "/usr/bin/chromium is missing (browser tests): sudo apt-get install $(CHROMIUM_PACKAGES)"; \
	    exit 0; \
	  fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y --no-install-recommends $(CHROMIUM_PACKAGES) || \
	    { apt-get update && apt-get install -y --no-install-recommends $(CHROMIUM_PACKAGES); }; \
	fi

test-python: deps browser
	$(BIN)/pytest $(PYTEST_ARGS)

test: deps lint lint-contracts test-contracts test-forge test-python

# Every benchmark at two sizes and one table (bench/suite.py; docs/performance.md). Needs Redis.
# BENCH_ARGS: e.g. --only system,epoch or --no-gas.
bench: deps
	$(BIN)/python bench/suite.py $(BENCH_ARGS)

bench-quick: deps
	$(BIN)/python bench/suite.py --quick $(BENCH_ARGS)

bench-gas: $(SOL_STAMP)
	./node_modules/.bin/hardhat run bench/gas.js

clean:
	rm -rf artifacts cache .inferledger .pytest_cache .mypy_cache .ruff_cache $(SLITHER_VENV)
