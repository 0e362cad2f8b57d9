"""The dataset card: ``manifest.json`` (counts, hashes, config, sources), ``schema.json`` (columns and the
task's output schema) and ``dataset_summary.md`` (for people), written into one folder.

Everything before the split is read from the audit stream (components/common/events.py), so the card
and the events can never disagree: sources and their counts from ``ROWS_READ``, rejects from the
row-level reason codes of ingest and clean.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from components.common.events import REASONS, ROW_REASONS
from components.common.tables import COLUMNS
from components.split.core import SplitOptions, SplitResult

COLUMN_DOCS = {
    "id": "stable row id (from the data, or <source>:<row number>)",
    "group": "group id; a group is never on both sides of the split",
    "source": "train or eval: the data locator the row came from",
    "history": "JSON list of {role, content} turns before the prompt ([] for one-turn rows)",
    "prompt": "the last user turn",
    "completion": "the target answer",
}


def rejects_by_reason(events: list[dict[str, Any]]) -> Counter:
    counts: Counter = Counter()
    for e in events:
        if e["code"] in ROW_REASONS:
            counts[e["code"]] += e["count"]
    return counts


def manifest(
    events: list[dict[str, Any]],
    result: SplitResult,
    *,
    config_hash: str,
    hashes: dict[str, str],
    settings: dict,
) -> dict[str, Any]:
    from components.common.provenance import git_sha, package_version

    sources = [
        {
            "source": e["details"]["source"],
            "locator": e["details"].get("locator", ""),
            "format": e["details"].get("format", ""),
            "sha256": e["details"].get("sha256", ""),
            "rows_in": e["count"],
            "accepted": e["details"]["accepted"],
            "rejected": e["details"]["rejected"],
        }
        for e in events
        if e["code"] == "ROWS_READ"
    ]
    rows_in = sum(s["rows_in"] for s in sources)
    rejected = rejects_by_reason(events)
    return {
        "rows": {
            "in": rows_in,
            "rejected": sum(rejected.values()),
            "train": result.train_rows,
            "validation": result.validation_rows,
            "eval": result.eval_rows,
            "accounted": rows_in
            == sum(rejected.values()) + result.train_rows + result.validation_rows + result.eval_rows,
        },
        "groups": {
            "train": result.train_groups,
            "validation": result.validation_groups,
            "eval": result.eval_groups,
        },
        "rejected_by_reason": dict(sorted(rejected.items())),
        "sources": sources,
        "split": {**settings, "explicit_eval": result.explicit_eval, "moved_to_train": result.moved_groups},
        "labels": {
            "train": dict(sorted(result.labels_train.items())),
            "eval": dict(sorted(result.labels_eval.items())),
        },
        "sha256": hashes,
        "config_hash": config_hash,
        "slmforge_version": package_version(),
        "git_sha": git_sha(),
    }


def schema_doc(output_schema: dict | None) -> dict[str, Any]:
    return {
        "format": "parquet",
        "columns": {c: {"type": "string", "description": COLUMN_DOCS[c]} for c in COLUMNS},
        "completion_schema": output_schema,
    }


def _bar(n: int, top: int, width: int = 30) -> str:
    return "█" * max(1, round(width * n / top)) if n else ""


def summary_markdown(man: dict[str, Any], result: SplitResult) -> str:
    rows = man["rows"]
    lines = [
        "# Dataset summary",
        "",
        f"**{rows['in']} rows read** = {rows['train']} train + {rows['validation']} validation + "
        f"{rows['eval']} eval + {rows['rejected']} rejected"
        + ("" if rows["accounted"] else " — **accounting mismatch**"),
        "",
        "| source | locator | format | rows in | accepted | rejected |",
        "|---|---|---|---:|---:|---:|",
        *[
            f"| {s['source']} | `{s['locator']}` | {s['format']} | {s['rows_in']} | {s['accepted']} | "
            f"{sum(s['rejected'].values())} |"
            for s in man["sources"]
        ],
        "",
        f"Split: seed {man['split'].get('seed')}, "
        + (
            "explicit eval locator"
            if result.explicit_eval
            else f"eval fraction {man['split'].get('eval_fraction')}, whole groups"
        )
        + f"; {man['groups']['train']} train groups, {man['groups']['eval']} eval groups"
        + f"; validation slice {man['groups']['validation']} groups ({rows['validation']} rows) carved from "
        f"train (fraction {man['split'].get('validation_fraction')}), watched while training, never the eval rows"
        + (
            f"; {len(result.moved_groups)} groups kept in train to cover every label value."
            if result.moved_groups
            else "."
        ),
        "",
        "## Fields",
        "",
        "| column | meaning |",
        "|---|---|",
        *[f"| `{c}` | {COLUMN_DOCS[c]} |" for c in COLUMNS],
        "",
        "## Rejected rows by reason",
        "",
    ]
    if man["rejected_by_reason"]:
        lines += ["| reason | rows | meaning |", "|---|---:|---|"]
        lines += [f"| `{c}` | {n} | {REASONS[c].meaning} |" for c, n in man["rejected_by_reason"].items()]
    else:
        lines.append("None.")
    lines += ["", "## Label distribution", ""]
    names = sorted(set(result.labels_train) | set(result.labels_eval))
    if names:
        lines += ["| label | train | eval |", "|---|---:|---:|"]
        lines += [f"| `{n}` | {result.labels_train[n]} | {result.labels_eval[n]} |" for n in names]
    else:
        lines.append("No label fields (the schema has no enum/const values and data.split.cover is empty).")
    lines += ["", "## Length (characters of prompt + completion)", "", "| chars | rows | |", "|---|---:|---|"]
    top = max(result.lengths.values(), default=0)
    for bucket in sorted(result.lengths, key=lambda b: int(b.split("-")[0])):
        lines.append(f"| {bucket} | {result.lengths[bucket]} | {_bar(result.lengths[bucket], top)} |")
    return "\n".join(lines) + "\n"


def write_card(
    folder: str | Path,
    upstream_events: list[dict[str, Any]],
    result: SplitResult,
    options: SplitOptions,
    *,
    config_hash: str,
    hashes: dict[str, str],
) -> dict[str, Any]:
    """Write manifest.json, schema.json and dataset_summary.md into ``folder``; return the manifest."""
    settings = {
        "seed": options.seed,
        "eval_fraction": options.eval_fraction,
        "validation_fraction": options.validation_fraction,
        "cover": options.cover,
    }
    man = manifest(
        upstream_events + result.events, result, config_hash=config_hash, hashes=hashes, settings=settings
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(man, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    schema = json.dumps(schema_doc(options.output_schema), indent=2, sort_keys=True) + "\n"
    (folder / "schema.json").write_text(schema, encoding="utf-8")
    (folder / "dataset_summary.md").write_text(summary_markdown(man, result), encoding="utf-8")
    return man
