"""Measure the replies recipe on the tiny model: held-out exact match, ROUGE-L and chrF, with wall times.

Runs the pipeline's own stages in one process, on a fresh tiny://replies model built from the committed
data (not the $SLMFORGE_HOME cache): ingest, clean (the config's near-duplicate threshold), a group-aware
split (eval_fraction and seed from config.yaml), full fine-tuning with the config's train section, then
greedy generation on the held-out families. Scores: exact match (after stripping surrounding whitespace),
ROUGE-L F1 (rouge-score, stemmer off, mean over rows) and chrF (sacrebleu's corpus chrF, divided by 100
so that every score is in [0, 1]). Needs ``pip install rouge-score sacrebleu``. Measures; asserts nothing.

    OMP_NUM_THREADS=1 .venv/bin/python examples/replies/measure.py [--steps N] [--batch-size B] [--lr LR]
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


def scores(predictions: list[str], targets: list[str]) -> dict[str, float]:
    """exact_match, rouge_l (mean ROUGE-L F1) and chrf (corpus chrF / 100)."""
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import CHRF

    preds = [p.strip() for p in predictions]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = [scorer.score(t, p)["rougeL"].fmeasure for p, t in zip(preds, targets, strict=True)]
    return {
        "exact_match": sum(p == t for p, t in zip(preds, targets, strict=True)) / len(preds),
        "rouge_l": sum(rouge) / len(rouge),
        "chrf": CHRF().corpus_score(preds, [targets]).score / 100,
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
        base = build_tiny_model(example_corpus("replies"), tmp / "base")
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
    metrics = scores(predictions, targets)
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
    lengths = [len(tok(t)["input_ids"]) for t in targets]
    print(f"eval targets: {len(targets)}, {max(lengths)} tokens at most")
    # Which values the mistakes get wrong: a value counts as right when the reply of the note with that
    # one value taken from the prediction... simpler: when its rendered text occurs in the prediction.
    sys.path.insert(0, str(HERE))
    import replies as generator

    wrong: Counter = Counter()
    for r, p in zip(rows, predictions, strict=True):
        booking = generator.read_note(r["prompt"])
        for name, value in booking.items():
            shown = {"confirm": "confirmed", "cancel": "cancelled", "move": "moved", "pending": "pending"}.get(
                value, value
            )
            if name == "kind":
                shown = {"hotel": "stay", "flight": "flight", "car": "car rental", "table": "table"}[value]
            if name == "count":
                shown = {"hotel": f"{value}-night", "car": f"{value}-day", "table": f"for {value}"}[booking["kind"]]
            if name in ("origin", "destination"):
                shown = f"{'from' if name == 'origin' else 'to'} {value}"
            if f" {shown}" not in f" {p.strip()}".replace(".", " "):
                wrong[name] += 1
    print("rows with a wrong value, by value: " + ", ".join(f"{k} {v}" for k, v in wrong.most_common()))
    mistakes = [(r["prompt"], r["completion"], p) for r, p in zip(rows, predictions, strict=True)]
    mistakes = [m for m in mistakes if m[2].strip() != m[1]]
    for prompt, target, prediction in mistakes[: args.errors]:
        print(f"  {prompt}\n    expected {target}\n    got      {prediction.strip()}")


if __name__ == "__main__":
    main()
