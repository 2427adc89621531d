# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.json

.PHONY: run test lint typecheck unit integration bench clean

$(BIN)/.run-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all]'
	touch $@

$(BIN)/.dev-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(BIN)/.run-installed

run: $(BIN)/.run-installed
	MIRA_SECRETS_BACKEND=env exec $(BIN)/python -m mira.entrypoints.web $(CONFIG)

lint: $(BIN)/.dev-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(BIN)/.dev-installed
	$(BIN)/mypy src

unit: $(BIN)/.dev-installed
	$(BIN)/pytest -q tests/unit

integration: $(BIN)/.dev-installed
	$(BIN)/pytest -q tests/integration

test: lint typecheck $(BIN)/.dev-installed
	$(BIN)/pytest -q tests

bench: $(BIN)/.dev-installed
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
