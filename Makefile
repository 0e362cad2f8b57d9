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

test: setup tools ## run the whole test suite (unit, components, compile, kfp.local pipeline runs)
	$(BIN)/python -m pytest

lint: setup lint-infra ## ruff lint and format check (and lint-infra)
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
	$(BIN)/python benchmarks/compile_time.py

clean: ## remove build outputs and local state (.slmforge/: model cache, MLflow store, runs)
	rm -rf build .slmforge .pytest_cache

# --- images, infra and workflow checks (images/, infra/, .github/) --------------------------------------
# The linters live in .venv-tools, never in .venv: checkov pins ~95 packages of its own, and its
# bc-python-hcl2 installs the same `hcl2` module as python-hcl2, so checkov gets a venv to itself.
TOOLS ?= .venv-tools
IMAGE_REPO ?= slmforge
IMAGE_TAG ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' components/version.py)
GIT_SHA ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DOCKER ?= docker
DOCKER_BUILD_FLAGS ?=
.PHONY: tools lint-infra constraints images

$(TOOLS)/%/.installed: tests/infra/requirements-%.txt
	rm -rf $(TOOLS)/$*
	$(PYTHON) -m venv $(TOOLS)/$*
	$(TOOLS)/$*/bin/pip install -q --disable-pip-version-check -r $<
	@touch $@

tools: $(TOOLS)/lint/.installed $(TOOLS)/checkov/.installed ## linters in .venv-tools (hadolint, zizmor, check-jsonschema, python-hcl2, checkov)

lint-infra: tools ## hadolint images/, zizmor and the workflow schema on .github/, checkov on infra/
	$(TOOLS)/lint/bin/hadolint images/cpu/Dockerfile images/trainer/Dockerfile
	$(TOOLS)/lint/bin/zizmor --offline --no-progress --persona pedantic .github
	$(TOOLS)/lint/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(TOOLS)/lint/bin/check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	$(TOOLS)/checkov/bin/checkov --quiet --compact --skip-download --framework terraform -d infra

constraints: setup ## rewrite images/constraints.txt (the images' pins) from .venv's runtime dependencies
	$(BIN)/python images/constraints.py > images/constraints.txt

# Exits 2, saying why, when no Docker engine answers: a build target that built nothing has not succeeded.
images: ## docker-build slmforge/cpu and slmforge/trainer:VERSION (override IMAGE_REPO, IMAGE_TAG)
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make images: no Docker engine answers ('$(DOCKER) info' failed), nothing built; build where one runs (CI: .github/workflows/images.yml)"; exit 2; }
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) -f images/cpu/Dockerfile --build-arg SLMFORGE_GIT_SHA=$(GIT_SHA) -t $(IMAGE_REPO)/cpu:$(IMAGE_TAG) .
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) -f images/trainer/Dockerfile --build-arg SLMFORGE_GIT_SHA=$(GIT_SHA) -t $(IMAGE_REPO)/trainer:$(IMAGE_TAG) .
