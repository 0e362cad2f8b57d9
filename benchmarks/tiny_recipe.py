"""How well does a training recipe teach the random-init tiny model the demo task, and how fast?

Builds a tiny model of the given size from the example's text, splits the example's data exactly as
the pipeline does (group-aware, same seed), trains with the given recipe and evaluates on the held-out
families with the pipeline's own train/evaluate code. Prints time and metrics. Measures; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/tiny_recipe.py [--hidden 128] [--layers 2] [--heads 4]
        [--steps 3000] [--batch-size 8] [--lr 2e-3] [--config examples/travel/config.yaml]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "examples" / "travel" / "config.yaml"))
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="default: the config's train.max_steps")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--lr", type=float, default=None, help="default: the config's")
    parser.add_argument("--tied", action="store_true", help="tie input and output embeddings")
    args = parser.parse_args()

    from components.common.config_load import load_config
    from components.common.tiny import build_tiny_model, example_corpus, tiny_name
    from components.evaluate.core import evaluate
    from components.ingest.core import FieldMap, ingest
    from components.split.core import split
    from components.train.core import TrainOptions, train

    cfg = load_config(args.config)
    t = cfg.train
    steps, batch, lr = args.steps or t.max_steps, args.batch_size or t.batch_size, args.lr or t.learning_rate
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f = cfg.data.fields
        ingest(
            cfg.data.train, FieldMap(f.prompt, f.completion, f.group or "", f.id or ""), tmp / "all.parquet"
        )
        split(
            tmp / "all.parquet",
            tmp / "train.parquet",
            tmp / "eval.parquet",
            cfg.data.split.eval_fraction,
            cfg.data.split.seed,
        )
        base = build_tiny_model(
            example_corpus(tiny_name(cfg.model.base)),
            tmp / "base",
            hidden_size=args.hidden,
            layers=args.layers,
            heads=args.heads,
            tie_embeddings=args.tied,
        )
        opts = TrainOptions(
            method="full",
            max_steps=steps,
            batch_size=batch,
            learning_rate=lr,
            lr_scheduler=t.lr_scheduler,
            warmup_ratio=t.warmup_ratio,
            max_length=t.max_length,
            seed=t.seed,
        )
        result = train(tmp / "train.parquet", str(base), cfg.task.system_prompt, opts, tmp / "model")
        ev = evaluate(
            str(tmp / "model"),
            tmp / "eval.parquet",
            cfg.task.system_prompt,
            cfg.task.output_schema,
            tmp / "pred.parquet",
            max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
        )
    metrics = {k: round(v, 3) for k, v in ev.metrics.items() if "/" not in k}
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        f"model: hidden {args.hidden}, layers {args.layers}, heads {args.heads}, tied={args.tied}; "
        f"recipe: {steps} steps x batch {batch}, lr {lr}"
    )
    print(
        f"train {result.runtime_s:.0f} s, final loss {result.final_loss:.4f}; held-out {json.dumps(metrics)}"
    )


if __name__ == "__main__":
    main()
