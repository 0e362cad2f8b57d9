"""How much does running the pipeline through kfp.local cost over calling its stages in one process?

Runs the same stages, on the same parameters (the demo config by default), twice:
  1. in one Python process, calling each stage's core function in order;
  2. as the real pipeline through kfp.local's SubprocessRunner (one subprocess per task).
Both start with the tiny model already cached and write to fresh temporary folders. Prints the wall
times per stage and the ratio local / in-process. Measures; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/pipeline_overhead.py [--config examples/travel/config.yaml] [--max-steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]


def in_process(params: dict, work: Path) -> dict[str, float]:
    """The stages called directly, in DAG order; returns seconds per stage."""
    from components.common.models import module_names
    from components.common.provenance import sha256_path
    from components.evaluate.core import evaluate
    from components.gate.core import apply_rules
    from components.ingest.core import FieldMap, ingest
    from components.register.core import register
    from components.split.core import split
    from components.train.core import TrainOptions, train

    times: dict[str, float] = {}

    def timed(name, fn, *a, **kw):
        start = time.perf_counter()
        out = fn(*a, **kw)
        times[name] = time.perf_counter() - start
        return out

    fields = FieldMap(
        params["prompt_field"], params["completion_field"], params["group_field"], params["id_field"]
    )
    timed("ingest", ingest, params["train_data"], fields, work / "data.parquet")
    timed(
        "split",
        split,
        work / "data.parquet",
        work / "train.parquet",
        work / "eval.parquet",
        params["eval_fraction"],
        params["split_seed"],
    )
    opts = TrainOptions(
        params["method"],
        params["max_steps"],
        params["batch_size"],
        params["learning_rate"],
        params["lr_scheduler"],
        params["warmup_ratio"],
        params["max_length"],
        params["train_seed"],
        params["lora_r"],
        params["lora_alpha"],
        params["lora_dropout"],
        module_names(params["lora_target_modules"]),
        module_names(params["lora_modules_to_save"]),
    )
    timed(
        "train",
        train,
        work / "train.parquet",
        params["base_model"],
        params["system_prompt"],
        opts,
        work / "model",
    )
    schema = json.loads(params["output_schema"])
    decode = dict(
        max_new_tokens=params["eval_max_new_tokens"],
        batch_size=params["eval_batch_size"],
        max_examples=params["eval_max_examples"],
    )
    cand = timed(
        "evaluate",
        evaluate,
        str(work / "model"),
        work / "eval.parquet",
        params["system_prompt"],
        schema,
        work / "pred.parquet",
        **decode,
    )
    timed(
        "evaluate-base",
        evaluate,
        params["base_model"],
        work / "eval.parquet",
        params["system_prompt"],
        schema,
        work / "base_pred.parquet",
        **decode,
    )
    passed, _ = timed("gate", apply_rules, cand.metrics, json.loads(params["gate_rules"]))
    if passed:
        timed(
            "register",
            register,
            work / "model",
            model_name=params["model_name"],
            weights_sha256=sha256_path(work / "model"),
            metrics=cand.metrics,
            tags={},
        )
    times["exact_match"] = cand.metrics["exact_match"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "examples" / "travel" / "config.yaml"))
    parser.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    args = parser.parse_args()

    from components.common.config_load import load_config
    from components.common.tiny import ensure_tiny_model
    from pipelines.parameters import pipeline_parameters

    params = pipeline_parameters(load_config(args.config))
    if args.max_steps:
        params["max_steps"] = args.max_steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        os.environ["SLMFORGE_HOME"] = str(cache)
        if params["base_model"].startswith("tiny://"):
            ensure_tiny_model(params["base_model"])  # both runs start with the model built

        (tmp / "inproc").mkdir()
        start = time.perf_counter()
        stages = in_process(params, tmp / "inproc")
        inproc = time.perf_counter() - start

        from pipelines.local import run_pipeline_local

        run = run_pipeline_local(params, tmp / "runs")
        local = run.seconds

    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(f"config: {args.config}  max_steps={params['max_steps']}")
    for name, seconds in stages.items():
        if name != "exact_match":
            print(f"  in-process {name:<14} {seconds:7.1f} s")
    print(f"in-process total   {inproc:7.1f} s   exact_match {stages['exact_match']:.3f}")
    print(f"kfp.local total    {local:7.1f} s   exact_match {run.candidate_metrics['exact_match']:.3f}")
    print(f"ratio local / in-process: {local / inproc:.2f}x")


if __name__ == "__main__":
    main()
