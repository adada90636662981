# Two commands: `make run` starts the gateway with a demo, `make test` runs every check.
# Everything runs from .venv, which these targets create and keep in step with pyproject.toml.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; pip runs again only when pyproject.toml is newer.
STAMP := $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 8080
CREDENTIALS := .demo-credentials

# Used by `make test-pg`: a local PostgreSQL (pytest creates test_<name>) and Redis db 15.
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/gateway_test
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15

.PHONY: help install run test lint typecheck pytest test-pg bench bench-spend clean

help:
	@echo "make run       create .venv, migrate, seed a demo, serve on http://$(HOST):$(PORT)"
	@echo "make test      ruff, ruff format --check, mypy, lint-imports, pytest (SQLite)"
	@echo "make test-pg   the same against local PostgreSQL and Redis ($(PG_TEST_URL))"
	@echo "make lint      ruff check, ruff format --check, lint-imports"
	@echo "make typecheck mypy (strict)"
	@echo "make bench     run benchmarks/run.py"
	@echo "make bench-spend  benchmarks/spend_pipeline.py (needs DATABASE_URL=postgres://...)"
	@echo "make clean     remove caches, collected static files and build leftovers"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing the project and its dev tools into $(VENV) ..."
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(STAMP)

# Fresh secrets for the embedded default, written once: an existing .env is never touched.
.env: | $(STAMP)
	$(BIN)/python scripts/write_env.py .env

run: $(STAMP) .env
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py collectstatic --noinput -v 0
	$(BIN)/python manage.py seed_demo --credentials-file $(CREDENTIALS)
	@$(BIN)/python scripts/banner.py --url http://$(HOST):$(PORT) --credentials $(CREDENTIALS)
	GATEWAY_SERVE_STATIC=true exec $(BIN)/uvicorn gatewaysite.asgi:application \
		--host $(HOST) --port $(PORT) --no-access-log --lifespan auto

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy .

pytest: $(STAMP)
	$(BIN)/python -m pytest

test-pg:
	DATABASE_URL=$(PG_TEST_URL) REDIS_URL=$(REDIS_TEST_URL) $(MAKE) --no-print-directory test

bench: $(STAMP)
	@if [ -f benchmarks/run.py ]; then \
		$(BIN)/python benchmarks/run.py; \
	else \
		echo "No benchmarks yet (benchmarks/run.py does not exist)."; \
	fi

# 10 million ledger rows: PostgreSQL only, e.g. DATABASE_URL=postgres://.../gw_spendbench.
bench-spend: $(STAMP)
	$(BIN)/python benchmarks/spend_pipeline.py

# Leaves .venv, .env, the database and .demo-credentials alone: those hold state or secrets.
clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache .import_linter_cache staticfiles build \
		*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
