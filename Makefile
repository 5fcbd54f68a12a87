# The two commands a user needs: `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test test-unit test-integration test-compat test-security test-browser lint typecheck bench openapi clean

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/qbox up

test: setup
	$(PY) -m pytest -q tests

test-unit: setup
	$(PY) -m pytest -q tests/unit

test-integration: setup
	$(PY) -m pytest -q tests/integration

test-compat: setup
	$(PY) -m pytest -q tests/compat

test-security: setup
	$(PY) -m pytest -q tests/security

test-browser: setup
	$(PY) -m pytest -q tests/browser

lint: setup
	$(VENV)/bin/ruff check src tests

typecheck: setup
	$(VENV)/bin/mypy

# Every script in bench/ (a unit test keeps this list whole); each rewrites its own
# generated sections of docs/benchmarks.md. Root, crun and runsc; about 20 minutes.
# `make bench BENCH_FLAGS=--quick`: small sizes, a smoke run of the whole target.
BENCH_FLAGS ?=
BENCH_DOC ?= docs/benchmarks.md
BENCH_RUN = $(PY) $(1) $(BENCH_FLAGS) --markdown $(BENCH_DOC) $(2)

bench: setup
	$(call BENCH_RUN,bench/bench_agent.py)
	$(call BENCH_RUN,bench/bench_api.py)
	$(call BENCH_RUN,bench/bench_code.py)
	$(call BENCH_RUN,bench/bench_density.py)
	$(call BENCH_RUN,bench/bench_files.py)
	$(call BENCH_RUN,bench/bench_hosts.py,writes)
	$(call BENCH_RUN,bench/bench_hosts.py,cluster)
	$(call BENCH_RUN,bench/bench_preview.py)
	$(call BENCH_RUN,bench/bench_runtimes.py)
	$(call BENCH_RUN,bench/bench_scheduler.py)
	$(call BENCH_RUN,bench/bench_shell.py)
	$(call BENCH_RUN,bench/bench_templates.py)

# Rewrite docs/openapi.json from the routes (a unit test fails when they drift apart).
openapi: setup
	$(PY) scripts/openapi.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
