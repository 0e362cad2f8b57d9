# slmforge — `make help` lists the targets. README and CI call these same targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel first, so no dependency drags in a CUDA build; the trainer image installs CUDA torch instead.
TORCH_SPEC ?= torch==2.13.0
# 1 intra-op thread: on 2 shared cores, 2 threads ran a tiny model 14-20x slower under load.
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help
.PHONY: help setup demo test lint format compile bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/slmforge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

setup: $(BIN)/slmforge ## create .venv with CPU torch and slmforge[dev] (once; again when pyproject changes)

demo: setup ## run the travel demo end to end, offline, on the tiny model
	$(BIN)/slmforge demo

test: setup ## run the whole test suite (unit, components, compile, kfp.local pipeline runs)
	$(BIN)/python -m pytest

lint: setup ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

compile: setup ## compile every pipeline to build/pipelines/*.yaml
	$(BIN)/python compile.py

bench: setup ## run the benchmarks (they print; results go to benchmarks/RESULTS.md by hand)
	$(BIN)/python benchmarks/pipeline_overhead.py
	$(BIN)/python benchmarks/data_prep.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/eval_decoding.py

clean: ## remove build outputs and local state (.slmforge/: model cache, MLflow store, runs)
	rm -rf build .slmforge .pytest_cache
