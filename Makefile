# Ferryman: `make demo` serves the demo models, `make test` runs everything CI runs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
DEMO_DIR := demo-models
PORT ?= 8080

.PHONY: demo test lint typecheck unit venv clean sysdeps supply-chain bytecode

# Debian packages the test suite runs for real (database servers, proxies, image tools). Installed by
# `make test` when run as root; otherwise listed, and the tests that need them fail saying what is missing.
SYSTEM_PACKAGES := postgresql nginx debootstrap podman buildah

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

## bytecode: compile the package's .pyc files, as a wheel install does (an editable install leaves it to
## the first run, which never writes them under PYTHONDONTWRITEBYTECODE, so every start-up compiles)
bytecode: venv
	@$(BIN)/python -m compileall -q -j 0 src/ferryman

## demo: train the two demo models (once) and serve them on http://127.0.0.1:8080 (docs at /docs)
demo: venv bytecode
	@$(BIN)/python examples/demo/train.py --out $(DEMO_DIR) --url http://127.0.0.1:$(PORT)
	$(BIN)/ferryman serve --port $(PORT) $(DEMO_DIR)/iris.joblib $(DEMO_DIR)/breast-cancer.onnx

## lint: ruff (lint + format), mypy --strict on the package, hadolint on deploy/Dockerfile
lint: venv
	$(BIN)/ruff check src tests bench examples tools
	$(BIN)/ruff format --check src tests bench examples tools
	$(BIN)/mypy
	$(BIN)/hadolint deploy/Dockerfile

## supply-chain: bandit on the package (config in pyproject.toml), pip-audit on the lock file
## (skipped with one line when the vulnerability service cannot be reached; any finding fails)
supply-chain: venv
	$(BIN)/bandit -c pyproject.toml -r src/ferryman -q
	$(BIN)/python tools/audit_dependencies.py

## sysdeps: the Debian packages in SYSTEM_PACKAGES (apt-get when root)
sysdeps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "missing Debian packages:$$missing (run 'sudo make sysdeps')"; exit 1; fi

## test: lint, then the whole test suite (real servers on free ports)
test: lint supply-chain sysdeps
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) $(DEMO_DIR) .ferryman .mypy_cache .ruff_cache build/image

.PHONY: bench bench-quick bench-shadow bench-replicas bench-overhead wrk

wrk:
	@command -v wrk >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; \
	  else echo "wrk is missing: run 'sudo apt-get install wrk'"; exit 1; fi; }

## bench: Ferryman vs TorchServe, MLServer, KServe and bare ASGI apps in one run (~25 min); writes docs/benchmarks.md
bench: venv wrk bytecode
	$(BIN)/python -m bench.run

## bench-shadow: what shadow traffic costs the primary's p99 at half of peak load (~3 min)
bench-shadow: venv wrk
	$(BIN)/python -m bench.shadow_overhead

## bench-overhead: CPU per request with and without metrics scraping, monitoring and auth (alternating runs, ~30 min)
bench-overhead: venv wrk
	$(BIN)/python -m bench.metrics_overhead
	$(BIN)/python -m bench.monitoring_overhead
	$(BIN)/python -m bench.auth_overhead

## bench-replicas: req/s through nginx in front of 1 vs 2 replicas on one PostgreSQL (~1 min)
bench-replicas: venv wrk sysdeps
	$(BIN)/python -m bench.replicas

## soak: 100,000 requests after a 100,000-request warm-up, monitoring and payload logs on; RSS flat, queues within caps (~2 min)
.PHONY: soak
soak: venv
	$(BIN)/python -m bench.soak

## bench-quick: a short check of the benchmark harness itself (W1, a few servers, 3 s points); prints the tables
bench-quick: venv wrk
	$(BIN)/python -m bench.run --quick
