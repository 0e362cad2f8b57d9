"""Measure the support recipe on the tiny model: held-out accuracy and macro-F1, with wall times.

Runs the pipeline's own stages in one process, on a fresh tiny://support model built from the committed
data (not the $SLMFORGE_HOME cache): ingest, clean (the config's near-duplicate threshold), a group-aware
split (eval_fraction and seed from config.yaml, every label kept in train), full fine-tuning with the
config's train section, then greedy generation on the held-out families. A prediction counts as correct
when its text, stripped of surrounding whitespace, is exactly the expected label. Measures; asserts nothing.

    OMP_NUM_THREADS=1 .venv/bin/python examples/support/measure.py [--steps N] [--batch-size B] [--lr LR]
        [--max-length T] [--max-new-tokens K] [--split-seed S] [--errors 10]

It reads config.yaml with PyYAML rather than the config loader, so it runs whatever the loader accepts.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def scores(predictions: list[str], targets: list[str], labels: list[str]) -> dict[str, float]:
    """label_validity, accuracy and macro-F1 over ``labels`` (a label never predicted nor expected is skipped)."""
    preds = [p.strip() for p in predictions]
    pairs = list(zip(preds, targets, strict=True))
    f1s = []
    for label in labels:
        tp = sum(p == label and t == label for p, t in pairs)
        fp = sum(p == label and t != label for p, t in pairs)
        fn = sum(p != label and t == label for p, t in pairs)
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {
        "label_validity": sum(p in labels for p in preds) / len(preds),
        "accuracy": sum(p == t for p, t in pairs) / len(pairs),
        "macro_f1": sum(f1s) / len(f1s),
    }


def main() -> None:
    import sys

    sys.path.insert(0, str(REPO))
    import yaml

    cfg = yaml.safe_load((HERE / "config.yaml").read_text(encoding="utf-8"))
    t, task = cfg["train"], cfg["task"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=t["max_steps"])
    parser.add_argument("--batch-size", type=int, default=t["batch_size"])
    parser.add_argument("--lr", type=float, default=t["learning_rate"])
    parser.add_argument("--max-length", type=int, default=t["max_length"])
    parser.add_argument("--max-new-tokens", type=int, default=cfg["eval"]["max_new_tokens"])
    parser.add_argument("--split-seed", type=int, default=cfg["data"]["split"]["seed"])
    parser.add_argument("--errors", type=int, default=10, help="held-out mistakes to print")
    args = parser.parse_args()

    import torch

    from components.clean.core import CleanOptions, clean
    from components.common.models import load_for_inference
    from components.common.tables import read_rows
    from components.common.task import prompt_token_ids
    from components.common.tiny import build_tiny_model, example_corpus
    from components.evaluate.core import generate
    from components.ingest.core import IngestOptions, ingest
    from components.split.core import SplitOptions, split
    from components.train.core import TrainOptions, train

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    labels = list(task["labels"])
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        ingest(str(HERE / cfg["data"]["train"]), "", IngestOptions(), tmp / "all.parquet", tmp / "rej.jsonl")
        cleaned = clean(
            tmp / "all.parquet",
            tmp / "clean.parquet",
            tmp / "rej2.jsonl",
            CleanOptions(near_dup_threshold=cfg["data"]["clean"]["near_dup_threshold"]),
        )
        sp = cfg["data"]["split"]
        result = split(
            tmp / "clean.parquet",
            tmp / "train.parquet",
            tmp / "eval.parquet",
            SplitOptions(eval_fraction=sp["eval_fraction"], seed=args.split_seed, cover=sp.get("cover")),
        )
        times["data"] = time.perf_counter() - start

        start = time.perf_counter()
        base = build_tiny_model(example_corpus("support"), tmp / "base")
        times["tiny model"] = time.perf_counter() - start

        opts = TrainOptions(
            method="full",
            max_steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            lr_scheduler=t["lr_scheduler"],
            warmup_ratio=t["warmup_ratio"],
            max_length=args.max_length,
            seed=t["seed"],
            logging_steps=50,
        )
        start = time.perf_counter()
        trained = train(tmp / "train.parquet", str(base), task["system_prompt"], opts, tmp / "model")
        times["train"] = time.perf_counter() - start

        start = time.perf_counter()
        rows = read_rows(tmp / "eval.parquet")
        model, tok = load_for_inference(str(tmp / "model"))
        prompts = [prompt_token_ids(tok, task["system_prompt"], r["prompt"]) for r in rows]
        predictions = generate(model, tok, prompts, args.max_new_tokens, cfg["eval"]["batch_size"])
        times["eval"] = time.perf_counter() - start

    targets = [r["completion"] for r in rows]
    metrics = scores(predictions, targets, labels)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        f"data: {cleaned.rows_in} rows, clean kept {cleaned.kept} ({dict(cleaned.rejected)}); "
        f"split (seed {args.split_seed}) {result.train_rows} train / {result.eval_rows} eval rows "
        f"({result.train_groups} / {result.eval_groups} groups)"
    )
    print(
        f"recipe: {args.steps} steps x batch {args.batch_size}, lr {args.lr}, max_length {args.max_length}, "
        f"max_new_tokens {args.max_new_tokens}; final loss {trained.final_loss:.4f}"
    )
    print("wall s: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print("held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    print("eval labels: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(targets).items())))
    mistakes = [(r["prompt"], r["completion"], p) for r, p in zip(rows, predictions, strict=True)]
    mistakes = [m for m in mistakes if m[2].strip() != m[1]]
    for prompt, target, prediction in mistakes[: args.errors]:
        print(f"  expected {target!r}, got {prediction!r}: {prompt}")


if __name__ == "__main__":
    main()
