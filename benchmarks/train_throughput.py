"""Does the train component train as fast as a bare TRL script, and how much padding does it feed the model?

Same data (examples/travel/data/travel.jsonl, all rows, as a canonical table), same model (the config's
``tiny://travel``, built into a temp SLMFORGE_HOME, not timed), same system prompt and recipe (the config's
lr, scheduler, warmup, max_length and seed; ``--steps``/``--batch-size`` from the command line), full
fine-tuning. Variants (``--variants``, any subset):

  * ``component``: ``components.train.core.train`` with tracking on (an MLflow sqlite store in the temp dir):
    its guard callbacks, the tracking callback and sinks, everything the pipeline's train stage runs;
  * ``bare``: a plain TRL script: ``SFTTrainer`` + ``SFTConfig`` with the same hyperparameters
    (completion_only_loss, max_length, lr, scheduler, warmup, batch, seed, data_seed, logging every 10
    steps and the first, bf16 off, CPU, report_to none, no checkpoints, no progress bar) and no callbacks
    of ours; the dataset is built with ``components.common.task.training_example`` from the same rows;
  * ``untracked``: ``train()`` without an experiment (no tracking callback, no MLflow): with ``component``,
    splits the component's overhead into tracking and the rest;
  * ``group_by_length``, ``packing``: ``train()`` with tracking and ``TrainOptions.group_by_length`` or
    ``TrainOptions.packing`` (TRL's bfd packing, padding-free).

Tokens are counted the same way everywhere: a forward pre-hook on the model feeding a
``components.train.tracking.TokenCounter`` (non-pad = ``attention_mask.sum()``; a padding-free batch has no
mask, so all its tokens count). The time is the training loop only: ``trainer.train()`` wall time for the
bare script, ``TrainResult.runtime_s`` (the same call, inside ``train()``) for the others, so model loading
and dataset tokenization are outside it in both; tokens/s = non-pad tokens / that time. The component's
own ``tracking.tokens_per_s`` (which leaves out the time spent in MLflow calls) is printed beside it.

All runs share one process. An untimed warm-up (``--warmup-steps``) of ``bare`` and ``component`` first
imports everything, warms the kernels and creates the MLflow store (its time is printed: a first run against
a new store pays for the schema creation). Then every variant runs ``--repeats`` times, the order reversed
on every other round, and each variant's median, min and max are reported. Measures; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py [--steps 150] [--batch-size 8] [--repeats 3]
        [--variants component,bare,untracked,group_by_length,packing] [--warmup-steps 10]
        [--config examples/travel/config.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file: make `components` importable without an install
    sys.path.insert(0, str(REPO))

from runinfo import code_version, load_average, machine, versions  # noqa: E402  (benchmarks/runinfo.py, next to this file)

VARIANTS = ("component", "bare", "untracked", "group_by_length", "packing")
LABELS = {
    "component": "train() — tracking on (MLflow sqlite)",
    "bare": "bare TRL script (SFTTrainer + SFTConfig)",
    "untracked": "train() — no experiment (tracking off)",
    "group_by_length": "train() — tracking on, group_by_length",
    "packing": "train() — tracking on, packing (bfd, padding-free)",
}


# ---- the runs -----------------------------------------------------------------------------------------


def _recipe(cfg, steps: int, batch: int) -> dict:
    t = cfg.train
    return dict(
        max_steps=steps,
        batch_size=batch,
        learning_rate=t.learning_rate,
        lr_scheduler=t.lr_scheduler,
        warmup_ratio=t.warmup_ratio,
        max_length=t.max_length,
        seed=t.seed,
    )


def run_component(variant: str, recipe: dict, data: dict, work: Path) -> dict:
    """One ``train()`` call; the tokens come from its TrackingSummary, or (untracked) from our own hook."""
    from components.train.core import TrainOptions, train

    opts = TrainOptions(
        method="full",
        group_by_length=variant == "group_by_length",
        packing=variant == "packing",
        **recipe,
    )
    extra: dict = {}
    callbacks: list = []
    counter = None
    if variant == "untracked":
        counter, hook_cb = _counting_callback()
        callbacks.append(hook_cb)
    else:
        extra = dict(
            experiment="train-throughput", tracking_uri=data["tracking_uri"], artifact_dir=work / "art"
        )
    result = train(
        data["train"],
        data["base"],
        data["system_prompt"],
        opts,
        work / "model",
        callbacks,
        **extra,
    )
    if counter is not None:
        tokens, non_pad, tracked_tps = counter.tokens, counter.non_pad_tokens, float("nan")
    else:
        s = result.tracking
        tokens, non_pad, tracked_tps = s.tokens, s.non_pad_tokens, s.tokens_per_s
    return dict(
        seconds=result.runtime_s,
        tokens=tokens,
        non_pad=non_pad,
        tracked_tps=tracked_tps,
        steps=result.steps,
        final_loss=result.final_loss,
    )


def _counting_callback():
    """A TokenCounter fed by a forward pre-hook registered at train begin (untracked variant only): the
    same hook the tracking callback registers, without anything else of it."""
    from transformers import TrainerCallback

    from components.train.tracking import TokenCounter

    counter = TokenCounter()

    class Count(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            model.register_forward_pre_hook(_hook(counter), with_kwargs=True)

    return counter, Count()


def _hook(counter):
    def count(module, args, kwargs):
        if module.training:
            counter.add(kwargs if "input_ids" in kwargs or not args else {"input_ids": args[0]})

    return count


def run_bare(recipe: dict, data: dict, work: Path) -> dict:
    """A plain TRL fine-tuning script on the same model, rows, rendering and hyperparameters."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    from components.common.tables import read_rows
    from components.common.task import training_example
    from components.train.tracking import TokenCounter

    set_seed(recipe["seed"])
    tokenizer = AutoTokenizer.from_pretrained(data["base_path"])
    model = AutoModelForCausalLM.from_pretrained(data["base_path"], dtype=torch.float32)
    rows = read_rows(data["train"])
    dataset = Dataset.from_list(
        [training_example(data["system_prompt"], r["prompt"], r["completion"], r["history"]) for r in rows]
    )
    config = SFTConfig(
        output_dir=str(work / "bare"),
        max_steps=recipe["max_steps"],
        per_device_train_batch_size=recipe["batch_size"],
        learning_rate=recipe["learning_rate"],
        lr_scheduler_type=recipe["lr_scheduler"],
        warmup_steps=round(recipe["warmup_ratio"] * recipe["max_steps"]),
        max_length=recipe["max_length"],
        completion_only_loss=True,
        logging_steps=10,
        logging_first_step=True,
        save_strategy="no",
        report_to=[],
        seed=recipe["seed"],
        data_seed=recipe["seed"],
        bf16=False,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    counter = TokenCounter()
    hook = trainer.model.register_forward_pre_hook(_hook(counter), with_kwargs=True)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    hook.remove()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return dict(
        seconds=seconds,
        tokens=counter.tokens,
        non_pad=counter.non_pad_tokens,
        tracked_tps=float("nan"),
        steps=trainer.state.global_step,
        final_loss=losses[-1] if losses else float("nan"),
    )


SINK_SECONDS: dict[str, float] = {}  # seconds inside MlflowSink calls and the loss-curve PNG, this run


def _time_tracking_calls() -> None:
    """Wrap the MLflow sink's methods and the loss-curve PNG in timers (SINK_SECONDS), so the tracking
    overhead inside the training loop can be split out. The wrappers cost a perf_counter call each."""
    from components.train import tracking

    def timed(key, fn):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                SINK_SECONDS[key] = SINK_SECONDS.get(key, 0.0) + time.perf_counter() - start

        return wrapper

    for name in ("start", "log_metrics", "log_artifact", "end"):
        setattr(tracking.MlflowSink, name, timed(f"mlflow.{name}", getattr(tracking.MlflowSink, name)))
    tracking.loss_curve_png = timed("png", tracking.loss_curve_png)


def run_variant(variant: str, recipe: dict, data: dict, tmp: Path) -> dict:
    """One run; the Trainer's printed logs go to a buffer (the same for every variant)."""
    work = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=tmp))
    SINK_SECONDS.clear()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if variant == "bare":
                r = run_bare(recipe, data, work)
            else:
                r = run_component(variant, recipe, data, work)
        r["sinks"] = dict(SINK_SECONDS)
        return r
    finally:
        gc.collect()


# ---- reporting ----------------------------------------------------------------------------------------


def _tps(r: dict) -> float:
    return r["non_pad"] / r["seconds"] if r["seconds"] > 0 else 0.0


def _stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def report(
    args, recipe: dict, n_rows: int, results: dict[str, list[dict]], warmup: dict, load: tuple[str, str]
) -> None:
    when = time.strftime("%Y-%m-%d")
    threads = os.environ.get("OMP_NUM_THREADS", "")
    code = code_version("components", "benchmarks/train_throughput.py")
    command = (
        f"OMP_NUM_THREADS={threads} python benchmarks/train_throughput.py --steps {args.steps} "
        f"--batch-size {args.batch_size} --repeats {args.repeats} --variants {','.join(results)}"
    )
    print()
    print(f"machine: {machine()}, OMP_NUM_THREADS={threads}, python {platform.python_version()}, {when}")
    print(f"code: {code}; {versions('torch', 'transformers', 'trl')}")
    print(f"load average (1/5/15 min) at start: {load[0]}; at end: {load[1]}")
    print(
        f"recipe: full, {recipe['max_steps']} steps x batch {recipe['batch_size']}, "
        f"lr {recipe['learning_rate']:g} {recipe['lr_scheduler']}, warmup {recipe['warmup_ratio']:g}, "
        f"max_length {recipe['max_length']}, "
        f"seed {recipe['seed']}; {args.repeats} repeats, order reversed every other round"
    )
    for name, r in warmup.items():
        first = r["sinks"].get("mlflow.start")
        store = f" (MLflow run start {first:.2f} s: a new sqlite store is created)" if first else ""
        print(
            f"warm-up, not in the tables: {name} {args.warmup_steps} steps, "
            f"training loop {r['seconds']:.2f} s{store}"
        )
    print()

    head = (
        f"{'variant':<16} {'median tok/s':>12} {'min':>8} {'max':>8} {'loop s (med)':>12} "
        f"{'tracked tok/s':>13} {'non-pad tok':>11} {'all tok':>9} {'pad eff':>8} {'tok/step':>8} "
        f"{'final loss':>10}"
    )
    print(head)
    print("-" * len(head))
    rows = {}
    for variant, runs in results.items():
        med, lo, hi = _stats([_tps(r) for r in runs])
        secs = statistics.median(r["seconds"] for r in runs)
        tracked = [r["tracked_tps"] for r in runs if r["tracked_tps"] == r["tracked_tps"]]
        tracked_s = f"{statistics.median(tracked):,.0f}" if tracked else "-"
        r0 = runs[0]
        eff = r0["non_pad"] / r0["tokens"] if r0["tokens"] else 0.0
        same = all((r["non_pad"], r["tokens"]) == (r0["non_pad"], r0["tokens"]) for r in runs)
        rows[variant] = dict(med=med, lo=lo, hi=hi, secs=secs, tracked=tracked_s, eff=eff, r0=r0, same=same)
        print(
            f"{variant:<16} {med:>12,.0f} {lo:>8,.0f} {hi:>8,.0f} {secs:>12.2f} {tracked_s:>13} "
            f"{r0['non_pad']:>11,}{'' if same else '*'} {r0['tokens']:>9,} {eff:>8.1%} "
            f"{r0['non_pad'] / max(r0['steps'], 1):>8,.0f} {r0['final_loss']:>10.4f}"
        )
    print(
        "tok/s = non-pad tokens / loop s; tracked tok/s = TrainResult.tracking.tokens_per_s (leaves out the "
        "time in MLflow calls and the Trainer's set-up before on_train_begin); tok/step = non-pad tokens "
        "per step"
    )
    if not all(r["same"] for r in rows.values()):
        print("* token counts differed between repeats of this variant (first run's shown)")
    print()
    ratio_line = ""
    if "component" in results and "bare" in results:
        c, b = results["component"], results["bare"]
        pairs = [_tps(x) / _tps(y) for x, y in zip(c, b, strict=True)]
        ratio = rows["component"]["med"] / rows["bare"]["med"]
        same_tokens = c[0]["non_pad"] == b[0]["non_pad"] and c[0]["tokens"] == b[0]["tokens"]
        ratio_line = (
            f"component / bare tokens/s: {ratio:.3f}x (ratio of medians; per round {min(pairs):.3f}-"
            f"{max(pairs):.3f}x; goal >= 0.95x); same batches: "
            f"{'yes' if same_tokens else 'NO'} ({c[0]['non_pad']:,} vs {b[0]['non_pad']:,} non-pad tokens), "
            f"final loss {c[0]['final_loss']:.4f} vs {b[0]['final_loss']:.4f}"
        )
        print(ratio_line)
        if "untracked" in results:
            u = rows["untracked"]["med"]
            print(
                f"untracked / bare: {u / rows['bare']['med']:.3f}x; component / untracked: "
                f"{rows['component']['med'] / u:.3f}x (the cost of tracking)"
            )
    for variant, runs in results.items():
        if not runs[0]["sinks"]:
            continue
        keys = sorted({k for r in runs for k in r["sinks"]})
        parts = [f"{k} {statistics.median(r['sinks'].get(k, 0.0) for r in runs):.3f}" for k in keys]
        total = statistics.median(sum(r["sinks"].values()) for r in runs)
        share = statistics.median(sum(r["sinks"].values()) / r["seconds"] for r in runs)
        print(
            f"tracking calls inside the loop, {variant} (median s per run): {', '.join(parts)}; "
            f"total {total:.3f} s = {share:.1%} of the loop"
        )
    print("per run (s, non-pad tok/s), in run order:")
    for variant, runs in results.items():
        print(f"  {variant:<16} " + "  ".join(f"{r['seconds']:.2f} s {_tps(r):,.0f}" for r in runs))

    # ---- Markdown for RESULTS.md ----
    print()
    print(
        f"`{command}`: the travel demo's {n_rows:,} rows, "
        f"tiny://travel, full fine-tuning, {recipe['max_steps']} steps × {recipe['batch_size']}, "
        f"max_length {recipe['max_length']}; {machine()}, OMP_NUM_THREADS={threads}, {when}, code {code}; "
        f"load average {load[0]} at start. Time = the training loop only (trainer.train()); "
        f"{args.repeats} runs per variant, alternating order."
    )
    print()
    print(
        "| variant | non-pad tokens/s, median (min–max) | loop s | padding efficiency | non-pad tokens/step |"
    )
    print("|---|---:|---:|---:|---:|")
    for variant, r in rows.items():
        print(
            f"| {LABELS[variant]} | {r['med']:,.0f} ({r['lo']:,.0f}–{r['hi']:,.0f}) | {r['secs']:.2f} | "
            f"{r['eff']:.1%} | {r['r0']['non_pad'] / max(r['r0']['steps'], 1):,.0f} |"
        )
    if ratio_line:
        print()
        print(ratio_line)


# ---- main ---------------------------------------------------------------------------------------------


def prepare(cfg, tmp: Path) -> dict:
    """The canonical table of all demo rows, the tiny model built, an MLflow store location (not timed)."""
    from components.common.models import resolve_base
    from components.common.tables import write_rows

    rows = []
    with open(REPO / "examples" / "travel" / "data" / "travel.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows.append({k: r[k] for k in ("id", "group", "prompt", "completion")})
    n = write_rows(rows, tmp / "train.parquet")
    return dict(
        train=tmp / "train.parquet",
        rows=n,
        base=cfg.model.base,
        base_path=resolve_base(cfg.model.base),
        system_prompt=cfg.task.system_prompt,
        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "examples" / "travel" / "config.yaml"))
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    parser.add_argument(
        "--warmup-steps", type=int, default=10, help="untimed warm-up run of bare and component (0 = none)"
    )
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown or not variants:
        parser.error(f"--variants: unknown {sorted(unknown)}; use a subset of {','.join(VARIANTS)}")

    import logging

    import datasets
    import transformers

    from components.common.config_load import load_config

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # TRL's SFTConfig turns gradient_checkpointing on by default; transformers 5 warns on every config
    warnings.filterwarnings(
        "ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning
    )
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    _time_tracking_calls()
    cfg = load_config(args.config)
    recipe = _recipe(cfg, args.steps, args.batch_size)
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="slmforge-train-throughput-") as tmp:
        tmp = Path(tmp)
        os.environ["SLMFORGE_HOME"] = str(tmp / "home")
        data = prepare(cfg, tmp)
        print(f"data: {data['rows']:,} rows; model {data['base']} built in {data['base_path']}", flush=True)

        warmup: dict[str, dict] = {}
        if args.warmup_steps > 0:
            small = {**recipe, "max_steps": args.warmup_steps}
            uses_train = any(v != "bare" for v in variants)
            for name in ("bare", "component"):
                if (name == "bare" and "bare" in variants) or (name == "component" and uses_train):
                    warmup[name] = run_variant(name, small, data, tmp)
                    print(f"warm-up {name}: {warmup[name]['seconds']:.2f} s", flush=True)

        results: dict[str, list[dict]] = {v: [] for v in variants}
        for round_ in range(args.repeats):
            order = variants if round_ % 2 == 0 else variants[::-1]
            for variant in order:
                r = run_variant(variant, recipe, data, tmp)
                results[variant].append(r)
                print(
                    f"round {round_ + 1} {variant:<16} {r['seconds']:7.2f} s  {_tps(r):9,.0f} non-pad tok/s  "
                    f"loss {r['final_loss']:.4f}",
                    flush=True,
                )
    report(args, recipe, data["rows"], results, warmup, (load_start, load_average()))


if __name__ == "__main__":
    main()
