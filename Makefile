# Two commands: `make run` starts the gateway with a demo, `make test` runs every check.
# Everything runs from .venv, which these targets create and keep in step with pyproject.toml
# and with the interpreter: a different PYTHON gets a fresh .venv.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The newest of Python 3.13, 3.12, 3.11 found on PATH or in pyenv, unless PYTHON=... is given
# (e.g. `make test PYTHON=python3.12 VENV=.venv-3.12` keeps a second venv beside .venv).
ifndef PYTHON
PYTHON := $(shell sh scripts/find-python)
endif
VENV ?= .venv
BIN := $(VENV)/bin
# Touched after a successful install; pip runs again only when pyproject.toml is newer.
STAMP := $(VENV)/.installed
# What identifies an interpreter: a venv's python reports its base's version and prefix.
PY_ID := import sys; print(sys.version, sys.base_prefix)

HOST ?= 127.0.0.1
PORT ?= 8080
# `make run` hands these to uvicorn and to the gateway alike (README "Deploying"): at Ctrl+C or
# SIGTERM requests in flight get GATEWAY_DRAIN_SECONDS to finish; forwarded headers are
# believed only from GATEWAY_TRUSTED_PROXIES (empty: from no one, not even 127.0.0.1).
GATEWAY_DRAIN_SECONDS ?= 600
GATEWAY_TRUSTED_PROXIES ?=
CREDENTIALS := .demo-credentials

# Used by `make test-pg`: a local PostgreSQL (pytest creates test_<name>) and Redis db 15.
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/gateway_test
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15

.PHONY: help install run test lint typecheck pytest test-pg bench bench-spend lock clean

help:
	@echo "make run       create .venv, migrate, seed a demo, serve on http://$(HOST):$(PORT)"
	@echo "make test      ruff, ruff format --check, mypy, lint-imports, pytest (SQLite)"
	@echo "make test-pg   the same against local PostgreSQL and Redis ($(PG_TEST_URL))"
	@echo "make lint      ruff check, ruff format --check, lint-imports"
	@echo "make typecheck mypy (strict)"
	@echo "make bench     run benchmarks/run.py"
	@echo "make bench-spend  benchmarks/spend_pipeline.py (needs DATABASE_URL=postgres://...)"
	@echo "make lock      pin every resolved package in requirements/lock-py3.X.txt, per Python"
	@echo "make clean     remove caches, collected static files and build leftovers"

# Checked on every run: a venv made by another interpreter (another version, or one since
# removed, which leaves a python that no longer starts) is replaced, never patched.
$(VENV)/pyvenv.cfg: FORCE
	@want=$$($(PYTHON) -c '$(PY_ID)') || { \
		echo "$(PYTHON) does not run: pass PYTHON=python3.11 (or 3.12, 3.13)" >&2; exit 1; }; \
	have=$$($(BIN)/python -c '$(PY_ID)' 2>/dev/null || true); \
	if [ "$$want" != "$$have" ]; then \
		if [ -n "$$have" ] || [ -e $(VENV) ]; then \
			echo "$(VENV) was made by another Python: recreating it with $(PYTHON)"; \
		fi; \
		echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) -V 2>&1)) ..."; \
		rm -rf $(VENV); \
		$(PYTHON) -m venv $(VENV); \
	fi

$(STAMP): pyproject.toml $(VENV)/pyvenv.cfg
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
	GATEWAY_SERVE_STATIC=true GATEWAY_DRAIN_SECONDS='$(GATEWAY_DRAIN_SECONDS)' \
	GATEWAY_TRUSTED_PROXIES='$(GATEWAY_TRUSTED_PROXIES)' \
	exec $(BIN)/uvicorn gatewaysite.asgi:application \
		--host $(HOST) --port $(PORT) --no-access-log --lifespan auto \
		--timeout-graceful-shutdown '$(GATEWAY_DRAIN_SECONDS)' \
		--forwarded-allow-ips '$(GATEWAY_TRUSTED_PROXIES)'

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

# Pins what `pip install -e '.[dev]'` resolves today, once per supported Python found (the
# three resolve alike today, but markers may one day split them), each from a throwaway venv
# so that nothing installed by hand in $(VENV) slips in. Install from a lock with
# `pip install -r requirements/lock-py3.X.txt && pip install --no-deps -e .`.
LOCK_VENV := .venv-lock
lock:
	@mkdir -p requirements
	@for version in 3.11 3.12 3.13; do \
		python=$$(sh scripts/find-python $$version) || { echo "Skipping Python $$version"; continue; }; \
		echo "Resolving with $$python ..."; \
		rm -rf $(LOCK_VENV); \
		$$python -m venv $(LOCK_VENV); \
		$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'; \
		{ echo "# Every package \`pip install -e '.[dev]'\` resolved on Python $$version: \`make lock\`"; \
		  $(LOCK_VENV)/bin/python -m pip freeze --disable-pip-version-check --exclude-editable; \
		} > requirements/lock-py$$version.txt; \
		echo "Wrote requirements/lock-py$$version.txt"; \
	done; \
	rm -rf $(LOCK_VENV)

# Leaves the venvs, .env, the database and .demo-credentials alone: those hold state or secrets.
clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache .import_linter_cache staticfiles build \
		*.egg-info
	find . -path './.venv*' -prune -o -name __pycache__ -type d -exec rm -rf {} +

# A prerequisite that is always out of date: its targets' recipes run on every make.
FORCE:
