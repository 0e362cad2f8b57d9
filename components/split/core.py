"""split: a seeded, group-aware train/eval split of the canonical table.

Whole groups (paraphrase families) go to one side, so eval measures generalisation to unseen
families rather than to rephrasings of training rows. Same rows + seed = same split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from components.common.tables import read_rows, write_rows


@dataclass
class SplitResult:
    train_rows: int
    eval_rows: int
    train_groups: int
    eval_groups: int


def split_rows(rows: list[dict[str, str]], eval_fraction: float, seed: int):
    """Return (train, eval): groups shuffled by ``seed`` fill eval up to ``eval_fraction`` of the rows."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction={eval_fraction}: use a fraction in (0, 1)")
    by_group: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_group.setdefault(row["group"], []).append(row)
    if len(by_group) < 2:
        raise ValueError(f"{len(by_group)} group(s): a group-aware split needs at least 2")
    groups = sorted(by_group)  # sorted first so the shuffle depends on the seed only, not input order
    random.Random(seed).shuffle(groups)
    target = round(eval_fraction * len(rows))
    eval_groups: set[str] = set()
    taken = 0
    for g in groups:
        if taken >= target or len(eval_groups) == len(groups) - 1:
            break
        eval_groups.add(g)
        taken += len(by_group[g])
    train = [r for r in rows if r["group"] not in eval_groups]
    held = [r for r in rows if r["group"] in eval_groups]
    return train, held


def split(
    in_path: str | Path, train_path: str | Path, eval_path: str | Path, eval_fraction: float, seed: int
):
    rows = read_rows(in_path)
    train, held = split_rows(rows, eval_fraction, seed)
    write_rows(train, train_path)
    write_rows(held, eval_path)
    return SplitResult(
        train_rows=len(train),
        eval_rows=len(held),
        train_groups=len({r["group"] for r in train}),
        eval_groups=len({r["group"] for r in held}),
    )
