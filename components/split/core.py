"""split: a seeded, group-aware train/eval split with label coverage, streamed in two passes.

* Whole groups (paraphrase families, conversations) go to one side, so eval measures generalisation
  to unseen families rather than to rephrasings of training rows. Same rows + seed = same split.
* Every label value (for structured tasks: each enum/const value of the schema that occurs in a
  target, e.g. every command and flow) appears in train: eval groups holding a value train lacks are
  moved to train, and the move is reported (event ``MOVED_TO_TRAIN``).
* Rows from an explicit eval locator (``source == "eval"``) are the eval set as given; clean has already
  removed training rows that duplicate them or share their group.
* A validation slice (``validation_fraction`` of the rows, whole groups) is then carved from the training
  groups by the same seeded, coverage-keeping choice: training watches it (validation loss), so no training
  decision ever looks at the eval rows the gate judges.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from components.common.events import event
from components.common.options import StepOptions
from components.common.tables import RowWriter, iter_row_batches
from components.common.task import field_name, leaves


@dataclass
class SplitOptions(StepOptions):
    JSON_INPUTS = ("cover", "output_schema")

    eval_fraction: float = 0.1
    seed: int = 13
    # Fields whose every value must occur in train. None = the enum/const values of the task schema;
    # ["completion"] = the whole target is the label (classification); [] = no coverage guarantee.
    cover: list[str] | None = None
    output_schema: dict | None = None
    validation_fraction: float = 0.05  # of all rows, taken from the training groups; 0 = no slice


@dataclass
class SplitResult:
    train_rows: int = 0
    eval_rows: int = 0
    train_groups: int = 0
    eval_groups: int = 0
    validation_rows: int = 0
    validation_groups: int = 0
    explicit_eval: bool = False
    moved_groups: list[str] = field(default_factory=list)  # eval groups moved to train for coverage
    labels_train: Counter = field(default_factory=Counter)  # "field=value" -> rows
    labels_eval: Counter = field(default_factory=Counter)
    lengths: Counter = field(default_factory=Counter)  # character-length bucket -> rows
    events: list[dict[str, Any]] = field(default_factory=list)


def schema_enum_values(schema: Any) -> set[str]:
    """Every enum / const scalar anywhere in a JSON Schema (its closed vocabularies)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "enum" and isinstance(value, list):
                found.update(json.dumps(v) for v in value if not isinstance(v, (dict, list)))
            elif key == "const" and not isinstance(value, (dict, list)):
                found.add(json.dumps(value))
            else:
                found |= schema_enum_values(value)
    elif isinstance(schema, list):
        for item in schema:
            found |= schema_enum_values(item)
    return found


def label_values(completion: str, cover: list[str] | None, vocabulary: set[str]) -> set[str]:
    """The labels one target carries, as ``field=value`` strings."""
    if cover == ["completion"]:
        return {f"completion={completion.strip()}"}
    if cover == [] or (cover is None and not vocabulary):
        return set()
    try:
        value = json.loads(completion)
    except ValueError:
        return set()
    labels = set()
    for path, leaf in leaves(value).items():
        name, text = field_name(path), json.dumps(leaf)
        if (cover is None and text in vocabulary) or (cover is not None and name in cover):
            labels.add(f"{name}={text}")
    return labels


def length_bucket(n: int) -> str:
    """Power-of-two character-length bucket: '0-31', '32-63', '64-127', ..."""
    lo = 0 if n < 32 else 1 << (n.bit_length() - 1)
    return f"{lo}-{max(31, 2 * lo - 1)}"


def choose_eval_groups(sizes: dict[str, int], labels: dict[str, set[str]], eval_fraction: float, seed: int):
    """(eval groups, groups moved to train for coverage), deterministic for a seed."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction={eval_fraction}: use a fraction in (0, 1)")
    if len(sizes) < 2:
        raise ValueError(f"{len(sizes)} group(s): a group-aware split needs at least 2")
    groups = sorted(sizes)  # sorted first so the shuffle depends on the seed only, not on input order
    random.Random(seed).shuffle(groups)
    target = round(eval_fraction * sum(sizes.values()))
    in_train: Counter = Counter()  # label -> train groups holding it
    for g in groups:
        in_train.update(labels.get(g, ()))
    eval_groups: list[str] = []
    taken = 0
    moved: list[str] = []
    for g in groups:
        if taken >= target or len(eval_groups) == len(groups) - 1:
            break
        own = labels.get(g, set())
        if any(in_train[v] <= 1 for v in own):
            moved.append(g)  # its only training copy of some label: keep it in train
            continue
        in_train.subtract(own)
        eval_groups.append(g)
        taken += sizes[g]
    return set(eval_groups), moved


def choose_validation_groups(
    sizes: dict[str, int], labels: dict[str, set[str]], held: set[str], options: SplitOptions
) -> set[str]:
    """The training groups set aside for validation: ``validation_fraction`` of all rows, chosen among the
    groups not held out for eval as eval groups are (seed + 1), every label keeping a training group."""
    train_sizes = {g: n for g, n in sizes.items() if g not in held}
    if options.validation_fraction <= 0 or len(train_sizes) < 2:
        return set()
    share = options.validation_fraction * sum(sizes.values()) / sum(train_sizes.values())
    chosen, _ = choose_eval_groups(train_sizes, labels, min(share, 0.5), options.seed + 1)
    return chosen


def split(
    in_path: str | Path,
    train_path: str | Path,
    eval_path: str | Path,
    options: SplitOptions,
    validation_path: str | Path | None = None,
) -> SplitResult:
    """Two streaming passes: collect group sizes and labels, then write each row to its side. Without a
    ``validation_path`` no validation slice is carved."""
    vocabulary = schema_enum_values(options.output_schema) if options.output_schema else set()
    # Targets repeat (a few hundred distinct label sets in a million rows): parse each distinct target
    # once, and let groups share one frozenset per distinct label set.
    labels_of = lru_cache(maxsize=1 << 16)(lambda c: frozenset(label_values(c, options.cover, vocabulary)))
    shared: dict[frozenset, frozenset] = {}
    result = SplitResult()
    sizes: Counter = Counter()
    labels: dict[str, frozenset] = {}
    eval_groups: set[str] = set()  # explicit eval set: its groups; else chosen below
    for batch in iter_row_batches(in_path):
        for row in batch:
            group = row["group"]
            if row["source"] == "eval":
                result.explicit_eval = True
                eval_groups.add(group)
            sizes[group] += 1
            own = labels_of(row["completion"])
            if own:
                merged = labels[group] | own if group in labels else own
                labels[group] = shared.setdefault(merged, merged)
    if not result.explicit_eval:
        eval_groups, result.moved_groups = choose_eval_groups(
            sizes, labels, options.eval_fraction, options.seed
        )
    validation_groups = (
        choose_validation_groups(sizes, labels, eval_groups, options) if validation_path else set()
    )
    with ExitStack() as stack:
        train_w, eval_w = (
            stack.enter_context(RowWriter(train_path)),
            stack.enter_context(RowWriter(eval_path)),
        )
        validation_w = stack.enter_context(RowWriter(validation_path)) if validation_path else None
        for batch in iter_row_batches(in_path):
            for row in batch:
                held = row["source"] == "eval" if result.explicit_eval else row["group"] in eval_groups
                watched = not held and row["group"] in validation_groups  # validation_w exists then
                (eval_w if held else validation_w if watched else train_w).write(row)
                if not watched:  # the slice's labels are in train by construction
                    (result.labels_eval if held else result.labels_train).update(labels_of(row["completion"]))
                result.lengths[length_bucket(len(row["prompt"]) + len(row["completion"]))] += 1
    result.train_rows, result.eval_rows = train_w.rows, eval_w.rows
    result.validation_rows = validation_w.rows if validation_w else 0
    result.validation_groups = len(validation_groups)
    # clean removed training rows sharing a group with explicit eval rows: no group is on both sides
    result.eval_groups = len(eval_groups)
    result.train_groups = len(sizes) - result.eval_groups - result.validation_groups
    if result.train_rows == 0 or result.eval_rows == 0:
        raise ValueError(
            f"split left {result.train_rows} train and {result.eval_rows} eval rows. Fix: more groups, "
            "a different data.split.eval_fraction, or an explicit data.eval locator"
        )
    result.events = _events(result)
    return result


def _events(result: SplitResult) -> list[dict[str, Any]]:
    events = [
        event(
            "split",
            "SPLIT_DONE",
            result.train_rows + result.eval_rows,
            f"train {result.train_rows} rows / {result.train_groups} groups, eval {result.eval_rows} rows / "
            f"{result.eval_groups} groups"
            + (" (explicit eval locator)" if result.explicit_eval else "")
            + f", validation {result.validation_rows} rows / {result.validation_groups} groups (from train)",
        )
    ]
    if result.moved_groups:
        events.append(
            event(
                "split",
                "MOVED_TO_TRAIN",
                len(result.moved_groups),
                f"{len(result.moved_groups)} groups kept in train because they hold the only training copy of "
                f"a label value (e.g. {', '.join(result.moved_groups[:3])})",
            )
        )
    unseen = sorted(set(result.labels_eval) - set(result.labels_train))
    if unseen:
        events.append(
            event(
                "split", "UNSEEN_IN_TRAIN", len(unseen), f"eval label values never trained on: {unseen[:10]}"
            )
        )
    return events
