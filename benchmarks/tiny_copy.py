"""Why tiny:// models have untied embeddings: can a random-init 2-layer Qwen2 learn to copy a value?

A synthetic task: "Book a table in <city> for <n or n as a word>" -> two set_slot commands with the city
and the digit. 1,800 training rows, 200 held out. Trains the same model tied and untied for the same
steps and prints the loss and held-out exact match of each. Measures; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/tiny_copy.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

CITIES = [
    "Rome",
    "Paris",
    "Berlin",
    "Helsinki",
    "Madrid",
    "Oslo",
    "Vienna",
    "Prague",
    "Dublin",
    "Lisbon",
    "Athens",
    "Warsaw",
    "Zurich",
    "Milan",
    "Seoul",
    "Tokyo",
]
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def copy_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        city, people = rng.choice(CITIES), rng.randint(1, 9)
        said = WORDS[people - 1] if rng.random() < 0.5 else str(people)
        commands = [
            {"command": "set_slot", "slot": "city", "value": city},
            {"command": "set_slot", "slot": "people", "value": str(people)},
        ]
        rows.append(
            {
                "id": str(i),
                "group": str(i),
                "prompt": f"Book a table in {city} for {said}",
                "completion": json.dumps(commands, separators=(",", ":")),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    from components.common.tables import write_rows
    from components.common.tiny import build_tiny_model
    from components.evaluate.core import evaluate
    from components.train.core import TrainOptions, train

    rows = copy_rows(2000)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"{time.strftime('%Y-%m-%d')}; steps={args.steps}, batch 32, lr 3e-3"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_rows(rows[:1800], tmp / "train.parquet")
        write_rows(rows[1800:], tmp / "eval.parquet")
        corpus = [r["prompt"] for r in rows] + [r["completion"] for r in rows] + ["user", "assistant"] * 50
        for tied in (True, False):
            base = build_tiny_model(corpus, tmp / f"base-{tied}", vocab_size=512, tie_embeddings=tied)
            opts = TrainOptions(method="full", max_steps=args.steps, batch_size=32, learning_rate=3e-3)
            result = train(tmp / "train.parquet", str(base), "", opts, tmp / f"model-{tied}")
            ev = evaluate(
                str(tmp / f"model-{tied}"),
                tmp / "eval.parquet",
                "",
                {"type": "array"},
                tmp / f"pred-{tied}.parquet",
                max_new_tokens=64,
            )
            print(
                f"tied={tied!s:5}  final loss {result.final_loss:.4f}  held-out exact_match "
                f"{ev.metrics['exact_match']:.3f}  value match {ev.metrics['field_match/[].value']:.3f}  "
                f"({result.runtime_s:.0f} s)"
            )


if __name__ == "__main__":
    main()
