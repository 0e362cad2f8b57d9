"""What the GPU benchmarks share: Qwen2.5-shaped models with random weights built on the device (no
download), the travel rows as a canonical table, and the measurement around a Trainer (tokens/s after a
warm-up, peak memory, MFU).

A model folder holds the Qwen2.5 shape's config, bf16 random weights and the tiny://travel tokenizer (its
ids are far below the shape's vocabulary), so the travel rows tokenize as in the demo (~180 tokens a row)
while every matmul has the real model's size. ``--shapes tiny`` builds a small shape of the same family:
it runs on CPU, so the benchmarks' own code is exercised without a GPU.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file: make `components` importable without an install
    sys.path.insert(0, str(REPO))

from runinfo import versions  # noqa: E402  (benchmarks/runinfo.py, next to this file)

# Qwen2.5 0.5B / 1.5B / 7B (their config.json on the hub); "tiny": a CPU smoke-test shape.
SHAPE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "tie_word_embeddings",
)
SHAPES: dict[str, dict] = {
    name: dict(zip(SHAPE_FIELDS, values, strict=True))
    for name, values in {
        "0.5b": (896, 4864, 24, 14, 2, 151936, True),
        "1.5b": (1536, 8960, 28, 12, 2, 151936, True),
        "7b": (3584, 18944, 28, 28, 4, 152064, False),
        "tiny": (64, 128, 2, 4, 2, 4096, True),
    }.items()
}
# Dense bf16 peak of the GPU, for MFU (vendor data sheets, SXM parts without sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0}
SYSTEM = "You turn a travel request into a JSON list of commands."


def build_model(shape: str, folder: Path) -> Path:
    """A Qwen2.5-shaped model with random bf16 weights, created on the GPU (CPU for ``tiny``), saved to
    ``folder`` with the tiny://travel tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from components.common.tiny import ensure_tiny_model

    tiny = ensure_tiny_model("tiny://travel")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = Qwen2Config(
        **SHAPES[shape],
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16 if device == "cuda" else torch.float32)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def travel_table(folder: Path) -> Path:
    """Every travel row as a canonical table (components/common/tables.py)."""
    import json

    from components.common.tables import write_rows

    rows = [
        json.loads(line)
        for line in (REPO / "examples/travel/data/travel.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    path = folder / "travel.parquet"
    write_rows([{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in rows], path)
    return path


def params(folder: Path) -> int:
    """Parameters of a saved model, counted from its safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            for name in f.keys():
                total += _numel(f.get_slice(name).get_shape())
    return total


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass
class Measured:
    tokens_per_s: float  # non-pad tokens / s after the warm-up
    steps: int  # measured steps
    non_pad_tokens: int
    peak_gib: float  # torch.cuda.max_memory_allocated over the whole run (0 on CPU)
    seconds: float


def measuring_callback(warmup: int):
    """A TrainerCallback counting non-pad tokens (a forward pre-hook feeding TokenCounter, as the tracking
    callback does) and timing the steps after the first ``warmup``; ``.result()`` gives a ``Measured``."""
    import torch
    from transformers import TrainerCallback

    from components.train.tracking import TokenCounter

    cuda = torch.cuda.is_available()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class Measure(TrainerCallback):
        def __init__(self) -> None:
            self.counter = TokenCounter()
            self.start = self.end = 0.0
            self.tokens_at_start = 0
            self.first = self.last = 0

        def on_train_begin(self, args, state, control, model=None, **kw):
            if cuda:
                torch.cuda.reset_peak_memory_stats()

            def count(module, a, kwargs):
                if module.training:
                    self.counter.add(kwargs if "input_ids" in kwargs or not a else {"input_ids": a[0]})

            model.register_forward_pre_hook(count, with_kwargs=True)

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warmup:
                sync()
                self.start, self.first = time.perf_counter(), state.global_step
                self.tokens_at_start = self.counter.non_pad_tokens
            self.last = state.global_step

        def on_train_end(self, args, state, control, **kw):
            sync()
            self.end = time.perf_counter()

        def result(self) -> Measured:
            tokens = self.counter.non_pad_tokens - self.tokens_at_start
            seconds = self.end - self.start
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
            return Measured(
                tokens / seconds if seconds > 0 else 0.0, self.last - self.first, tokens, peak, seconds
            )

    return Measure()


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA device)"


def peak_tflops() -> float | None:
    name = gpu_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def mfu(tokens_per_s: float, n_params: int, method: str) -> float | None:
    """Model-FLOPs utilisation: 6N FLOPs a token for full fine-tuning, 4N for LoRA (no weight gradients of
    the frozen base), over the GPU's dense bf16 peak."""
    peak = peak_tflops()
    if not peak:
        return None
    return tokens_per_s * (6 if method == "full" else 4) * n_params / (peak * 1e12)


def stack() -> str:
    """The versions the GPU figures depend on."""
    return versions("torch", "transformers", "trl", "peft", "liger-kernel", "flash-attn", "xgrammar")


def write_results(out: Path | None, runs: list[dict]) -> None:
    """The runs as JSON at ``out`` (when given), with the device and the versions."""
    import json

    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"device": gpu_name(), "versions": stack(), "runs": runs}, indent=2))


def scratch(root: str | None = None) -> Path:
    """A work folder on the largest local disk ($SLMFORGE_BENCH_DIR, else /tmp)."""
    path = Path(root or os.environ.get("SLMFORGE_BENCH_DIR", "/tmp")) / f"slmforge-gpu-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
