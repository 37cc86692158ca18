# The one command surface of Consentry. `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= var/data
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install run up down test soak test-unit test-contract test-integration test-e2e lint fmt bench clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || PY=python3; test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create the virtualenv and install Consentry with its dev tools

run: $(STAMP) ## start the embedded platform (SQLite, one process) with the example policy
	$(BIN)/consentry run --data-dir $(DATA_DIR) --policy examples/policy.yaml --host $(HOST) --port $(PORT)

up: $(STAMP) ## the distributed topology as local processes: Kafka, PostgreSQL, API, relay, workers
	@bash infra/stack/up.sh

down: ## stop what `make up` started (services first, then Kafka and PostgreSQL)
	@bash infra/stack/down.sh

test: $(STAMP) ## start what the tests need, run every test, stop what was started
	@bash infra/with-services.sh $(BIN)/pytest -q tests

soak: $(STAMP) ## long variants: 25-kill crash runs, 20x property examples; numbers in var/soak/report.jsonl
	@mkdir -p var/soak; rm -f var/soak/report.jsonl; status=0; started=$$(date +%s); \
	  CONSENTRY_SOAK=1 CONSENTRY_SOAK_REPORT=$(CURDIR)/var/soak/report.jsonl \
	  bash infra/with-services.sh $(BIN)/pytest -q -m "soak or hypothesis" tests || status=$$?; \
	  echo "soak: $$(( $$(date +%s) - started )) s, exit $$status; var/soak/report.jsonl:"; \
	  cat var/soak/report.jsonl 2>/dev/null; exit $$status

test-unit: $(STAMP) ## unit tests only (no files, no services)
	$(BIN)/pytest -q tests/unit

test-contract: $(STAMP) ## the port contract suites (fakes and real adapters; PostgreSQL started)
	@CONSENTRY_SERVICES=postgres bash infra/with-services.sh $(BIN)/pytest -q tests/contract

test-integration: $(STAMP) ## integration tests on real SQLite files (and Kafka/PostgreSQL when started)
	@bash infra/with-services.sh $(BIN)/pytest -q tests/integration

test-e2e: $(STAMP) ## end-to-end tests over real HTTP
	@bash infra/with-services.sh $(BIN)/pytest -q tests/e2e

lint: $(STAMP) ## ruff, mypy --strict and import-linter
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP) ## format and auto-fix
	$(BIN)/ruff format services tests bench
	$(BIN)/ruff check --fix services tests bench

bench: $(STAMP) ## every benchmark and its baselines; the distributed one starts Kafka + PostgreSQL per stack (BENCH_ARGS="--quick")
	$(BIN)/python -m bench $(BENCH_ARGS)

clean: ## remove the virtualenv, caches and local data
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
