# Brigade: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?=
KITCHENS ?= 3
CHAOS_COUNT ?= 200

.PHONY: setup demo test lint typecheck unit bench chaos schemas clean

$(STAMP): pyproject.toml
	@bash deploy/setup.sh "$(PYTHON)" "$(VENV)"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/brigade-sim demo --kitchens $(KITCHENS) $(if $(DURATION),--duration $(DURATION),) --report demo-report.json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# `chaos` tests are the long forms (minutes each); `soak` tests run in CI with a small trial
# count (BRIGADE_CHAOS_COUNT unset) and with CHAOS_COUNT trials under `make chaos`.
test: lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider -m "not chaos"

bench: $(STAMP)
	$(BIN)/python -m bench all --json bench-results.json

chaos: $(STAMP)
	BRIGADE_CHAOS_COUNT=$(CHAOS_COUNT) $(BIN)/pytest -q -p no:cacheprovider -m "chaos or soak"

schemas: $(STAMP)
	$(BIN)/python -m protocol.schema_export

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
