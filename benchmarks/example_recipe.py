"""How well does an example's recipe teach the tiny model its task, and how long does it take?

Runs the pipeline's own stages in one process on a fresh ``tiny://<example>`` model (built into a temp
SLMFORGE_HOME, not timed): ingest, clean and split with the config's settings (``pipelines.cli_data.
prepare_splits``), full fine-tuning with the config's train section (``--steps``/``--batch-size``/``--lr``
override it), then the evaluation stage's own generation and task scorer (``components.evaluate.core.
evaluate``: the config's decoding and max_new_tokens) on the held-out groups. Prints the task metrics and
wall times. With a validation slice (``--set data.split.validation_fraction=0.05``) training watches it as
the train step does (validation loss, task metrics, ``train.select``, early stopping) and the run prints
which weights were written, the steps trained and the wall time of the validation passes against the
training time. Measures; asserts nothing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/example_recipe.py support [--split-seed N] [--steps N]
        [--set train.select=best --set ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("example", help="folder under examples/: travel, support, replies")
    parser.add_argument("--steps", type=int, help="override train.max_steps")
    parser.add_argument("--batch-size", type=int, help="override train.batch_size")
    parser.add_argument("--lr", type=float, help="override train.learning_rate")
    parser.add_argument("--weight-decay", type=float, help="override train.weight_decay")
    parser.add_argument("--split-seed", type=int, help="override data.split.seed")
    parser.add_argument("--seed", type=int, help="override train.seed (data order, dropout)")
    parser.add_argument("--keep", type=Path, help="copy the predictions (parquet) here, to read the errors")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, as slmforge run takes",
    )
    a = parser.parse_args()

    from runinfo import code_version, machine

    with tempfile.TemporaryDirectory(prefix="slmforge-recipe-") as tmp:
        os.environ["SLMFORGE_HOME"] = tmp
        from components.common.config_load import load_config
        from components.common.scoring import TaskSpec
        from components.common.tiny import ensure_tiny_model
        from components.evaluate.core import evaluate
        from components.train.core import TrainOptions, train
        from pipelines.cli_data import prepare_splits
        from pipelines.parameters import stage_options

        cfg = load_config(REPO / "examples" / a.example / "config.yaml", a.set)
        if a.split_seed is not None:
            cfg = cfg.model_copy(
                update={
                    "data": cfg.data.model_copy(
                        update={"split": cfg.data.split.model_copy(update={"seed": a.split_seed})}
                    )
                }
            )
        asked = {
            "max_steps": a.steps,
            "batch_size": a.batch_size,
            "learning_rate": a.lr,
            "seed": a.seed,
            "weight_decay": a.weight_decay,
        }
        # the train step's options as a pipeline run builds them, with this command's overrides
        opts = stage_options(TrainOptions, "train", cfg, **{k: v for k, v in asked.items() if v is not None})
        start = time.perf_counter()
        if cfg.model.base.startswith("tiny://"):
            ensure_tiny_model(cfg.model.base)
        train_path, eval_path = prepare_splits(cfg, Path(tmp) / "data")
        prepared = time.perf_counter()
        result = train(
            train_path,
            cfg.model.base,
            cfg.task.system_prompt,
            opts,
            Path(tmp) / "model",
            validation_path=train_path.parent / "validation.parquet",
        )
        trained = time.perf_counter()
        task = TaskSpec(cfg.task.type, cfg.task.output_schema, list(cfg.task.labels))
        scored = evaluate(
            str(Path(tmp) / "model"),
            eval_path,
            cfg.task.system_prompt,
            task,
            Path(tmp) / "predictions.parquet",
            max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
            decoding=cfg.eval.decoding,
        )
        if a.keep:
            shutil.copyfile(Path(tmp) / "predictions.parquet", a.keep)
        done = time.perf_counter()

    print(f"# {a.example}: {machine()}; {code_version()}")
    print(
        f"recipe: {opts.max_steps} steps x batch {opts.batch_size}, lr {opts.learning_rate:g}, "
        f"weight decay {opts.weight_decay:g}, split seed {cfg.data.split.seed}, train seed {opts.seed}, decoding {cfg.eval.decoding}; final loss {result.final_loss:.4f}"
    )
    if result.eval_history:
        share = result.validation_s / result.runtime_s
        print(
            f"steps trained {result.steps}, weights written: {result.selection}; {len(result.eval_history)} "
            f"validation passes took {result.validation_s:.1f} s of {result.runtime_s:.1f} s training "
            f"({share:.1%}); best eval_loss {min(v for _, v in result.eval_history):.4f}"
        )
        for name, value in result.task_metrics.items():
            print(f"  last pass {name:26s} {value:.3f}")
    print(f"held-out rows: {scored.examples}")
    for name in sorted(k for k in scored.metrics if k.count("/") <= 1 and "field_match/" not in k):
        print(f"  {name:22s} {scored.metrics[name]:.3f}")
    print(
        f"wall s: data {prepared - start:.0f}, train {trained - prepared:.0f}, evaluate {done - trained:.0f}, "
        f"total {done - start:.0f}"
    )


if __name__ == "__main__":
    main()
