# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.json

.PHONY: run test lint typecheck unit integration bench clean lock base-image image

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

# Hash-pinned locks the Dockerfile installs from (and `pip install -r requirements.txt`).
# `make lock` keeps current pins that still fit pyproject.toml; `make lock LOCK_FLAGS=--upgrade`
# moves every pin to the newest allowed release.
LOCK_FLAGS ?=
UV_COMPILE = $(BIN)/uv pip compile --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command 'make lock' $(LOCK_FLAGS)

$(BIN)/uv: $(BIN)/.dev-installed
	$(BIN)/pip install -q 'uv>=0.4'

lock: $(BIN)/uv
	$(UV_COMPILE) pyproject.toml --extra all -o requirements.txt
	$(UV_COMPILE) deploy/docker/build-requirements.in -o deploy/docker/build-requirements.txt

# The image. No registry reachable? `make base-image` builds a Debian bookworm base locally
# (mmdebstrap, as root); then `make image BASE_IMAGE=mira-base:bookworm`.
BASE_IMAGE ?= python:3.11.13-slim-bookworm
IMAGE ?= mira:0.1.0

base-image:
	deploy/docker/build-base-image.sh mira-base:bookworm

image:
	deploy/docker/build-image.sh '$(BASE_IMAGE)' '$(IMAGE)'

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
