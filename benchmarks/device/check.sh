#!/usr/bin/env bash
# On the lent GPU machine, in the repository root: install the carried wheels, then run the GPU tests and
# both GPU benchmarks, each under a time limit, ~8 min in all; results (text and JSON) go to $OUT.
#   bash benchmarks/device/check.sh [WHEELS]          (prepare WHEELS here first: make device-wheels)
set -uo pipefail
wheels=${1:-build/device-wheels}
out=${OUT:-build/device-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} SLMFORGE_HOME=$(mktemp -d) OMP_NUM_THREADS=8
export SLMFORGE_BENCH_DIR=${SLMFORGE_BENCH_DIR:-/tmp} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
quiet() { grep -vE "Warning|warnings.warn|it/s\]|examples/s\]|^\s*$" || true; }
{
  date -u +"%Y-%m-%dT%H:%MZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python --version
} | tee "$out/machine.txt"
python -m pip install -q --no-index --no-deps "$wheels"/*.whl 2>&1 | tail -3 \
  || python -m pip install -q --user --no-index --no-deps "$wheels"/*.whl 2>&1 | tail -3
python -m pip check 2>&1 | tee "$out/pip-check.txt" | tail -5
python - <<'PY' | tee -a "$out/machine.txt"
import importlib.metadata as m
for p in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "liger-kernel", "xgrammar", "bitsandbytes", "flash-attn"):
    try:
        print(p, m.version(p))
    except m.PackageNotFoundError:
        print(p, "-")
PY
echo "== tests/gpu"
timeout 150 python -m pytest -m gpu tests/gpu -q -p no:cacheprovider -rs 2>&1 | tee "$out/gpu-tests.txt" | tail -25
echo "== benchmarks/gpu_eval.py"
timeout 90 python benchmarks/gpu_eval.py --out "$out/gpu_eval.json" 2>&1 | quiet | tee "$out/gpu_eval.txt"
echo "== benchmarks/gpu_train.py"
timeout 220 python benchmarks/gpu_train.py --out "$out/gpu_train.json" 2>&1 | quiet | tee "$out/gpu_train.txt"
echo "== done: $out"
