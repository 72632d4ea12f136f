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

.PHONY: help deps demo test test-contracts test-python lint contracts bench clean

help:
	@echo "make demo   - bring up the whole system and run the paid loop (needs Redis)"
	@echo "make test   - lint, type-check and run every test (needs Redis and PostgreSQL)"
	@echo "make lint   - ruff and mypy only"
	@echo "make bench  - the benchmarks under bench/"

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
	$(BIN)/inferledger demo

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test-contracts: $(SOL_STAMP)
	./node_modules/.bin/hardhat test

test-python: deps
	$(BIN)/pytest $(PYTEST_ARGS)

test: deps lint test-contracts test-python

bench: deps
	$(BIN)/python bench/run.py

clean:
	rm -rf artifacts cache .inferledger .pytest_cache .mypy_cache .ruff_cache
