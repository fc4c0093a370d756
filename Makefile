# AgentConnect Voice developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# e.g. make test PYTEST_ARGS='-k webhook -x'
PYTEST_ARGS ?=
MYPY_ARGS ?= agentconnect sessions voiceagents demo console tests stubs bench

.PHONY: help deps test run services-up services-down services-status lint format bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

deps: ## install apt packages, livekit-server (.bin/) and the venv (.venv/); fast when done
	@scripts/install-deps.sh

test: deps ## run pytest against private PostgreSQL/Redis/livekit-server (started and stopped as needed)
	@scripts/run-tests.sh $(PYTEST_ARGS)

run: deps ## the demo: livekit-server --dev, Django, Celery worker+beat, agents (SQLite, no Redis)
	@scripts/run.sh

services-up: ## start the test services and keep them running (see .run/test/env)
	@scripts/test-services.sh start

services-down: ## stop the test services
	@scripts/test-services.sh stop

services-status: ## show the test services
	@scripts/test-services.sh status

lint: deps ## ruff (lint and format check) and mypy
	@echo "==> ruff check"; .venv/bin/ruff check .
	@echo "==> ruff format --check"; .venv/bin/ruff format --check .
	@echo "==> mypy"; DJANGO_DEBUG=true .venv/bin/mypy $(MYPY_ARGS)

format: deps ## apply ruff's fixes and formatting
	@.venv/bin/ruff check --fix .
	@.venv/bin/ruff format .

bench: deps ## run the benchmarks in bench/ (they print figures, assert nothing)
	@shopt -s nullglob; benches=(bench/bench_*.py); \
	if [[ $${#benches[@]} -eq 0 ]]; then echo "bench: no benchmarks yet (add bench/bench_*.py)"; exit 0; fi; \
	for b in "$${benches[@]}"; do echo "==> $$b"; .venv/bin/python "$$b"; done
