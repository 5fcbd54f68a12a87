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

bench: setup
	$(PY) bench/bench_api.py

# Rewrite docs/openapi.json from the routes (a unit test fails when they drift apart).
openapi: setup
	$(PY) scripts/openapi.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
