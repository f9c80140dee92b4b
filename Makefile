# Ferryman: `make demo` serves the demo models, `make test` runs everything CI runs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
DEMO_DIR := demo-models
PORT ?= 8080

.PHONY: demo test lint typecheck unit venv clean

## venv: a virtual environment with Ferryman and everything the demo and tests need
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	@if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv; \
	  else echo "python3-venv is missing: run 'sudo apt-get install python3-venv'"; exit 1; fi; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(LOCK) -e ".[dev]"
	touch $@

## demo: train the two demo models (once) and serve them on http://127.0.0.1:8080 (docs at /docs)
demo: venv
	@$(BIN)/python examples/demo/train.py --out $(DEMO_DIR) --url http://127.0.0.1:$(PORT)
	$(BIN)/ferryman serve --port $(PORT) $(DEMO_DIR)/iris.joblib $(DEMO_DIR)/breast-cancer.onnx

## lint: ruff (lint + format) and mypy --strict on the package
lint: venv
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

## test: lint, then the whole test suite (real servers on free ports)
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) $(DEMO_DIR) .ferryman .mypy_cache .ruff_cache

.PHONY: bench bench-quick bench-shadow wrk

wrk:
	@command -v wrk >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; \
	  else echo "wrk is missing: run 'sudo apt-get install wrk'"; exit 1; fi; }

## bench: Ferryman vs TorchServe, MLServer, KServe and bare ASGI apps in one run (~25 min); writes docs/benchmarks.md
bench: venv wrk
	$(BIN)/python -m bench.run

## bench-shadow: what shadow traffic costs the primary's p99 at half of peak load (~3 min)
bench-shadow: venv wrk
	$(BIN)/python -m bench.shadow_overhead

## bench-quick: a short check of the benchmark harness itself (W1, a few servers, 3 s points); prints the tables
bench-quick: venv wrk
	$(BIN)/python -m bench.run --quick
