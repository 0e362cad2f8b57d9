"""Does the train step train as fast as the best bare TRL recipe on a GPU? Side by side, one process.

Models: random-init Qwen2.5-shaped 0.5B, 1.5B and 7B built on the GPU (benchmarks/gpu_models.py; no
download), the travel rows (~180 tokens each with the tiny tokenizer), LoRA r16 on all linear layers, bf16.
Per shape, three runs of ``--warmup`` + ``--steps`` optimizer steps, timed after the warm-up:

  * ``train() padded``: ``components.train.core.train`` as the pipeline runs it: batch 32 rows of at most
    256 tokens, micro-batch, accumulation and gradient checkpointing from preflight's plan
    (``components.preflight.core.preflight`` on the same model and rows, for this GPU), attention and
    kernels ``auto``;
  * ``train() packed``: the same with ``packing`` (bfd, padding-free) into 4 sequences of 4096 tokens a step;
  * ``bare TRL``: the best recipe measured by hand (issue 16): SFTTrainer, bfd packing 4 x 4096, Liger
    kernels (when installed), fused AdamW, no gradient checkpointing, SDPA attention.

Printed per run: non-pad tokens/s (a forward pre-hook counts them; packing has no padding), MFU (4N FLOPs a
token for LoRA over the GPU's dense bf16 peak), peak memory (torch.cuda.max_memory_allocated) and, for the
train() runs, preflight's predicted peak and its error. Measures; asserts nothing.

    python benchmarks/gpu_train.py [--shapes 0.5b,1.5b,7b] [--steps 10] [--warmup 3] [--out FILE.json]
    python benchmarks/gpu_train.py --shapes tiny --steps 2 --warmup 1   # the code path, on CPU
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from gpu_models import (
    SHAPES,
    SYSTEM,
    build_model,
    gpu_name,
    measuring_callback,
    mfu,
    params,
    scratch,
    stack,
    travel_table,
    write_results,
)
from runinfo import code_version

ACCELERATOR = {"H200": "NVIDIA_H200_141GB", "H100": "NVIDIA_H100_80GB", "A100": "NVIDIA_A100_80GB"}
PADDED = dict(batch_size=32, max_length=256, packing=False)
PACKED = dict(batch_size=4, max_length=4096, packing=True)


def accelerator_type() -> str:
    name = gpu_name()
    return next((v for k, v in ACCELERATOR.items() if k in name), "NVIDIA_L4")


def run_train(model: Path, table: Path, work: Path, steps: int, warmup: int, layout: dict) -> dict:
    """``train()`` with preflight's plan for this GPU, as the pipeline wires them."""
    from components.preflight.core import preflight
    from components.preflight.options import PreflightOptions
    from components.train.core import TrainOptions, train

    plan_opts = PreflightOptions(
        method="lora",
        max_steps=warmup + steps,
        accelerator_type=accelerator_type(),
        gradient_checkpointing="auto",
        sample_rows=500,
        **layout,
    )
    planned = preflight(table, str(model), SYSTEM, plan_opts)
    opts = TrainOptions(
        method="lora",
        max_steps=warmup + steps,
        learning_rate=2e-4,
        grad_accum=planned.plan.grad_accum,
        gradient_checkpointing=bool(planned.options.gradient_checkpointing),
        logging_steps=10,
        **layout,
    )
    measure = measuring_callback(warmup)
    train(table, str(model), SYSTEM, opts, work / "out", [measure])
    return {
        **asdict(measure.result()),
        "micro_batch": planned.plan.micro_batch,
        "grad_accum": planned.plan.grad_accum,
        "gradient_checkpointing": opts.gradient_checkpointing,
        "predicted_peak_gib": planned.plan.memory.total_gib,
    }


def run_bare(model: Path, table: Path, work: Path, steps: int, warmup: int) -> dict:
    """The best bare TRL recipe (see the module docstring)."""
    import importlib.util

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from components.common.tables import read_rows
    from components.common.task import training_example

    cuda = torch.cuda.is_available()
    liger = cuda and importlib.util.find_spec("liger_kernel") is not None
    rows = read_rows(table)
    dataset = Dataset.from_list(
        [training_example(SYSTEM, r["prompt"], r["completion"], r["history"]) for r in rows]
    )
    config = SFTConfig(
        output_dir=str(work / "bare"),
        max_steps=warmup + steps,
        per_device_train_batch_size=PACKED["batch_size"],
        max_length=PACKED["max_length"],
        packing=True,
        completion_only_loss=True,
        learning_rate=2e-4,
        gradient_checkpointing=False,
        optim="adamw_torch_fused",
        use_liger_kernel=liger,
        bf16=cuda,
        use_cpu=not cuda,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )
    dtype = torch.bfloat16 if cuda else torch.float32
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model, dtype=dtype),
        args=config,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(model),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    measure = measuring_callback(warmup)
    trainer.add_callback(measure)
    trainer.train()
    return {**asdict(measure.result()), "liger": liger}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="0.5b,1.5b,7b", help=f"any of {', '.join(SHAPES)}")
    parser.add_argument("--steps", type=int, default=10, help="measured optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, caches)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    import torch

    root = scratch()
    table = travel_table(root)
    results = []
    print(f"device: {gpu_name()}; {stack()}; python {platform.python_version()}")
    print(f"code: {code_version('components', 'benchmarks')}; {time.strftime('%Y-%m-%d')}")
    for shape in args.shapes.split(","):
        model = build_model(shape, root / f"model-{shape}")
        n = params(model)
        runs = {
            "train() padded": lambda m=model: run_train(
                m, table, root / "p", args.steps, args.warmup, PADDED
            ),
            "train() packed": lambda m=model: run_train(
                m, table, root / "k", args.steps, args.warmup, PACKED
            ),
            "bare TRL": lambda m=model: run_bare(m, table, root / "b", args.steps, args.warmup),
        }
        for name, run in runs.items():
            log = io.StringIO()
            try:
                with contextlib.redirect_stdout(log):
                    r = run()
            except Exception as e:  # a run that fails is reported, and the others still run
                r = {"error": f"{type(e).__name__}: {e}"[:400]}
            attention = [line for line in log.getvalue().splitlines() if line.startswith("attention:")]
            r.update(shape=shape, run=name, params=n, attention=attention[:1])
            if "tokens_per_s" in r:
                r["mfu"] = mfu(r["tokens_per_s"], n, "lora")
            results.append(r)
            _print(r)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        shutil.rmtree(model, ignore_errors=True)
    for shape in args.shapes.split(","):
        by = {r["run"]: r for r in results if r["shape"] == shape}
        bare = by.get("bare TRL", {}).get("tokens_per_s")
        best = max((by[k].get("tokens_per_s", 0) for k in by if k.startswith("train()")), default=0)
        if bare:
            print(f"{shape}: best train() / bare TRL = {best / bare:.2f}x")
    write_results(args.out, results)
    shutil.rmtree(root, ignore_errors=True)
    return 0


def _print(r: dict) -> None:
    if "error" in r:
        print(f"{r['shape']:>5} {r['run']:<15} FAILED {r['error']}")
        return
    mfu_s = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"
    line = (
        f"{r['shape']:>5} {r['run']:<15} {r['tokens_per_s']:>10,.0f} tok/s  MFU {mfu_s:>6}  "
        f"peak {r['peak_gib']:6.1f} GiB"
    )
    if "predicted_peak_gib" in r:
        err = f"{(r['predicted_peak_gib'] - r['peak_gib']) / r['peak_gib']:+.0%}" if r["peak_gib"] else "-"
        line += (
            f"  predicted {r['predicted_peak_gib']:6.1f} GiB ({err})  micro {r['micro_batch']} x "
            f"accum {r['grad_accum']}, checkpointing {'on' if r['gradient_checkpointing'] else 'off'}"
        )
    if r.get("attention"):
        line += f"  [{r['attention'][0]}]"
    print(line, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
