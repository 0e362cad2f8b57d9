# slmforge — `make help` lists the targets. README and CI call these same targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The one lock (requirements.lock, hashes included) for dev, CI and both images; torch stays outside it
# (CPU wheel here and in images/cpu, CUDA wheel in images/trainer) at the version images/torch.txt pins.
LOCK ?= requirements.lock
# Tools that are not part of the project's environment (uv, the linters) live in .venv-tools.
TOOLS ?= .venv-tools
TORCH_VERSION := $(shell sed -n 's/^torch==//p' images/torch.txt)
# 1 intra-op thread: on 2 shared cores, 2 threads ran a tiny model 14-20x slower under load.
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help
.PHONY: help setup demo demo-record test test-slow drift lint format compile bench clean device-wheels

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# A new venv whenever the lock changes, so it holds exactly the locked versions and nothing left over.
# uv installs it (seconds, where pip took two minutes; pip's requirements format, so pip works as well):
# torch first, without dependencies (its CPU wheel; the lock carries what it needs), then the lock with
# --require-hashes --no-deps (uv names a package whose file does not match its hash), then slmforge
# itself; `uv pip check` names any requirement the lock leaves unmet (a pin removed or edited by hand).
# uv reads no pip.conf, so the CPU torch wheel's source is given: pip's find-links folder where the
# machine has one (these machines), else PyTorch's CPU index.
# --compile-bytecode: the .pyc files are written once, here. uv does not write them by default, and where
# PYTHONDONTWRITEBYTECODE is set (these machines) Python never does, so every process compiled the ML stack
# from source again: `from trl import SFTTrainer` took 22 s instead of 10 s, in every pipeline step and test
# subprocess (benchmarks/RESULTS.md, "Test time").
UV = $(TOOLS)/uv/bin/uv
TORCH_SOURCE = $(if $(TORCH_WHEELS),--find-links $(TORCH_WHEELS),--index-url https://download.pytorch.org/whl/cpu)
$(BIN)/slmforge: pyproject.toml $(LOCK) images/torch.txt $(TOOLS)/uv/.installed
	rm -rf $(VENV)
	$(UV) venv -q --seed --python $(PYTHON) $(VENV)
	$(UV) pip install -q --compile-bytecode --python $(BIN)/python --no-deps $(TORCH_SOURCE) torch==$(TORCH_VERSION)+cpu
	$(UV) pip install -q --compile-bytecode --python $(BIN)/python --no-deps --require-hashes -r $(LOCK) \
	  || { echo "make setup: $(LOCK) could not be installed as locked (uv names the package above). If it was edited by hand, restore it (git checkout $(LOCK)) or re-resolve it with make lock."; exit 1; }
	$(UV) pip install -q --compile-bytecode --python $(BIN)/python --no-deps -e .
	$(UV) pip check --python $(BIN)/python \
	  || { echo "make setup: $(LOCK) does not satisfy the requirements above (a pin missing or changed by hand?). Restore it (git checkout $(LOCK)) or re-resolve it with make lock."; exit 1; }
	@touch $@

setup: $(BIN)/slmforge ## create .venv with CPU torch and exactly the locked versions (again when the lock changes)

demo: setup ## run the travel demo end to end, offline, on the tiny model (writes the run's summary.json)
	$(BIN)/slmforge demo

demo-record: demo ## run the demo, then record its summary (benchmarks/demo-summary.json) and the README block
	$(BIN)/python benchmarks/demo_summary.py --record

# One worker per core (pytest-xdist), each test file on one worker (its module fixtures built once).
test: setup tools ## the test suite (unit, components, compile, infra, kfp.local runs on shortened recipes)
	$(BIN)/python -m pytest -m "not slow and not docker" -n auto --dist loadfile

device-wheels: ## the wheels a bare GPU machine lacks (cp312, from the lock) for benchmarks/device/check.sh (BNB=1: + bitsandbytes)
	bash benchmarks/device/wheels.sh build/device-wheels

test-slow: setup tools ## the full-recipe quality runs (minutes each): the shipped examples' configs unchanged
	$(BIN)/python -m pytest -m slow

# The newest versions pyproject.toml allows, not the lock: an upstream release that breaks the demo shows
# up here (and in the scheduled drift workflow) with the versions named, while users stay on the lock.
DRIFT_VENV ?= .venv-drift
drift: ## build .venv-drift from pyproject's ranges at their newest versions, run the demo, fail if its gate fails
	rm -rf $(DRIFT_VENV) build/drift
	$(PYTHON) -m venv $(DRIFT_VENV)
	$(DRIFT_VENV)/bin/pip install -q --disable-pip-version-check torch==$(TORCH_VERSION)
	$(DRIFT_VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	@mkdir -p build/drift && $(DRIFT_VENV)/bin/pip freeze --exclude-editable > build/drift/freeze.txt
	@grep -E '^[A-Za-z0-9]' $(LOCK) | sed 's/ .*//' | tr A-Z_ a-z- | sort > build/drift/locked.txt
	@grep -v '^torch==' build/drift/freeze.txt | tr A-Z_ a-z- | sort > build/drift/newest.txt
	@echo "drift: versions that differ from $(LOCK) (newest allowed by pyproject.toml):"
	@comm -13 build/drift/locked.txt build/drift/newest.txt | sed 's/^/  /'
	SLMFORGE_HOME=build/drift/home $(DRIFT_VENV)/bin/slmforge demo || true  # the summary decides below
	SLMFORGE_HOME=build/drift/home $(DRIFT_VENV)/bin/python benchmarks/demo_summary.py --require-pass

lint: setup lint-infra ## ruff lint and format check (and lint-infra)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

compile: setup ## compile every pipeline to build/pipelines/*.yaml (Vertex) and build/pipelines/kfp/*.yaml (KFP on GKE)
	$(BIN)/python compile.py
	$(BIN)/python compile.py --target kfp

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
IMAGE_REPO ?= slmforge
IMAGE_TAG ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' components/version.py)
GIT_SHA ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DOCKER ?= docker
DOCKER_BUILD_FLAGS ?=
.PHONY: tools lint-infra lock lock-check images base-image test-docker

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

# requirements.lock is written by uv (`uv pip compile`): it resolves in seconds, writes pip's own
# requirements format with every file's sha256, and keeps the pins already in the lock unless pyproject
# asks otherwise (UPGRADE=1 takes the newest versions pyproject allows). The resolution is for the images'
# and CI's platform, Linux x86_64 with Python 3.11; the trainer image (Python 3.12) runs `pip check` on it.
# The CPU torch wheel is found in pip's find-links folder where the machine has one (these machines),
# else on PyPI's CPU index for torch; either way torch itself is left out of the lock.
TORCH_WHEELS ?= $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
UV_COMPILE = pyproject.toml --extra dev --extra gpu --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 -c images/torch.txt --no-emit-package torch \
  --custom-compile-command "make lock" --quiet \
  $(if $(TORCH_WHEELS),--find-links $(TORCH_WHEELS),--index https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)

lock: $(TOOLS)/uv/.installed ## re-resolve requirements.lock from pyproject.toml (UPGRADE=1: newest allowed versions)
	$(TOOLS)/uv/bin/uv pip compile $(UV_COMPILE) $(if $(UPGRADE),--upgrade) -o $(LOCK)

# Resolves pyproject again, starting from the lock's pins, and compares name==version lines: a pin that
# is missing, extra or no longer allowed by pyproject shows up by name. Needs the package index.
lock-check: $(TOOLS)/uv/.installed ## fail when requirements.lock and pyproject.toml disagree (CI runs it)
	@mkdir -p build && cp $(LOCK) build/lock-check.txt
	@$(TOOLS)/uv/bin/uv pip compile $(UV_COMPILE) -o build/lock-check.txt
	@grep -E '^[A-Za-z0-9]' $(LOCK) | sed 's/ .*//' > build/lock-pins.txt
	@grep -E '^[A-Za-z0-9]' build/lock-check.txt | sed 's/ .*//' > build/lock-resolved.txt
	@diff build/lock-pins.txt build/lock-resolved.txt > build/lock-diff.txt \
	  && echo "lock-check: $(LOCK) agrees with pyproject.toml ($$(wc -l < build/lock-pins.txt) pins)" \
	  || { echo "lock-check: $(LOCK) disagrees with pyproject.toml ('<' in the lock, '>' what pyproject resolves to):"; \
	       cat build/lock-diff.txt; echo "Fix: make lock, then commit $(LOCK)"; exit 1; }

# BuildKit builds both images (Dockerfile.dockerignore, cache and secret mounts): a client with buildx, or
# the 20.10 client of Debian's docker.io (built-in BuildKit). Exits 2, saying why, when no engine answers:
# a build target that built nothing has not succeeded.
# BASE_IMAGE: a base for both images instead of the Dockerfiles' pinned ones (e.g. the one `make
# base-image` built). TRAINER_TORCH=cpu: the trainer image with CPU torch on a Python base (local runs
# without a GPU). CA_BUNDLE: a CA bundle for the builds' downloads (a corporate proxy's CA), passed as a
# build secret, never written into an image; empty: none.
export DOCKER_BUILDKIT = 1
BASE_IMAGE ?=
TRAINER_TORCH ?= cuda
CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
PYTHON_BASE = $(or $(BASE_IMAGE),$(shell sed -n 's/^ARG BASE_IMAGE=//p' images/cpu/Dockerfile))
IMAGE_BUILD = $(DOCKER) build $(DOCKER_BUILD_FLAGS) --build-arg SLMFORGE_GIT_SHA=$(GIT_SHA) \
  $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) $(if $(CA_BUNDLE),--secret id=ca_bundle$(,)src=$(CA_BUNDLE))
TRAINER_BUILD_ARGS_cpu = --build-arg BASE_IMAGE=$(PYTHON_BASE) --build-arg TORCH=cpu --build-arg PYTHON=python3 --build-arg APT_PACKAGES=
, := ,
images: ## docker-build slmforge/cpu and slmforge/trainer:VERSION (BASE_IMAGE=, TRAINER_TORCH=cpu, CA_BUNDLE=, IMAGE_REPO=, IMAGE_TAG=)
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make images: no Docker engine answers ('$(DOCKER) info' failed), nothing built; start one (make test-docker starts dockerd where it can) or build where one runs (CI: .github/workflows/images.yml)"; exit 2; }
	@rm -rf build/docker/wheels && mkdir -p build/docker/wheels
	@# this machine's CPU torch wheel (pip's find-links folder), so the build need not reach PyTorch's index
	@for w in $(TORCH_WHEELS)/torch-$(TORCH_VERSION)+cpu-*.whl; do [ -f "$$w" ] && ln -f "$$w" build/docker/wheels/ 2>/dev/null || { [ -f "$$w" ] && cp "$$w" build/docker/wheels/; } || true; done
	$(IMAGE_BUILD) -f images/cpu/Dockerfile --build-arg SLMFORGE_IMAGE=$(IMAGE_REPO)/cpu:$(IMAGE_TAG) -t $(IMAGE_REPO)/cpu:$(IMAGE_TAG) .
	$(IMAGE_BUILD) -f images/trainer/Dockerfile $(TRAINER_BUILD_ARGS_$(TRAINER_TORCH)) --build-arg SLMFORGE_IMAGE=$(IMAGE_REPO)/trainer:$(IMAGE_TAG) -t $(IMAGE_REPO)/trainer:$(IMAGE_TAG) .
	@$(DOCKER) images --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' $(IMAGE_REPO)/*

base-image: ## the Python base where the pinned one cannot be pulled: debootstrap a Debian bookworm image (images/base/build.sh)
	DOCKER=$(DOCKER) bash images/base/build.sh

# The Docker test tier: an engine (started, and stopped again, where none answers), the local base where
# the pinned one cannot be pulled, both images (trainer with CPU torch), then the finetune pipeline through
# kfp.local's DockerRunner on a shortened recipe (tests/docker). Layers and the pip cache stay between runs.
test-docker: setup ## start dockerd if needed, build the base and the images (CPU trainer), run the pipeline in containers
	@bash images/engine.sh start
	@trap 'bash images/engine.sh stop' EXIT; set -e; client=$$(cat build/docker/client); \
	  $(MAKE) --no-print-directory base-image DOCKER=$$client; \
	  $(MAKE) --no-print-directory images DOCKER=$$client BASE_IMAGE=$$(cat build/docker/base-image) TRAINER_TORCH=cpu; \
	  $(BIN)/python -m pytest -m docker tests/docker
