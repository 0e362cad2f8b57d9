"""The model card (``MODEL_CARD.md``) and lineage record (``lineage.json``) written beside exported weights.

Both are documents about the weights, not part of them: the weights hash that makes registration
idempotent (``weights_hash``) leaves them out, so two runs that train the same weights register once
even though their lineage URIs differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.common.provenance import sha256_path

CARD = "MODEL_CARD.md"
LINEAGE = "lineage.json"
# The chain `slmforge lineage` prints, in order: data -> split -> adapter -> merged -> eval -> registry.
LINEAGE_STEPS = ("data", "split_train", "split_eval", "adapter", "merged", "eval_adapter", "eval_exported")

INTENDED_USE = {
    "structured": "turning a user message into JSON that follows the task schema, for a program to act on",
    "classification": "assigning one label of the task's label set to a message",
    "generation": "writing a short reply of the kind seen in the training data",
}


def weights_hash(folder: str | Path) -> str:
    """sha256 of the weights folder without the documents written beside it."""
    return sha256_path(folder, exclude=(CARD, LINEAGE))


def write_lineage(folder: str | Path, lineage: dict[str, dict[str, Any]]) -> Path:
    path = Path(folder) / LINEAGE
    path.write_text(json.dumps(lineage, indent=2, sort_keys=True), encoding="utf-8")
    return path


def _table(rows: dict[str, Any]) -> list[str]:
    out = ["| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows.items()]
    return out


def model_card(
    *,
    name: str,
    task_type: str,
    base_model: str,
    model_info: dict[str, Any],
    manifest: dict[str, Any],
    gate_report: str,
    parity: str,
    lineage: dict[str, dict[str, Any]],
    config_hash: str,
) -> str:
    """The card as Markdown: what the model is, what it was trained on, how it scored, and its limits."""
    recipe = model_info.get("train_options", {})
    rows = manifest.get("rows", {})
    lines = [f"# {name}", "", f"A fine-tuned {task_type} model made by slmforge from `{base_model}`.", ""]
    lines += ["## Model", ""]
    lines += _table(
        {
            "base model": f"`{base_model}`",
            "method": model_info.get("exported_from", model_info.get("kind", "")),
            "weights": "safetensors (LoRA merged into the base weights)"
            if model_info.get("exported_from") in ("lora", "qlora")
            else "safetensors",
            "config hash": f"`{config_hash}`",
        }
    )
    if recipe:
        lines += ["", "Hyperparameters:", ""]
        lines += _table({k: f"`{v}`" for k, v in sorted(recipe.items())})
    lines += ["", "## Data", ""]
    lines += _table(
        {
            "rows in": rows.get("in", ""),
            "rejected": rows.get("rejected", ""),
            "train": rows.get("train", ""),
            "eval": rows.get("eval", ""),
            "every row accounted for": rows.get("accounted", ""),
            "train sha256": f"`{manifest.get('sha256', {}).get('train', '')}`",
            "eval sha256": f"`{manifest.get('sha256', {}).get('eval', '')}`",
        }
    )
    sources = manifest.get("sources", [])
    if sources:
        lines += ["", "Sources:", ""]
        lines += [
            f"- `{s['locator'] or s['source']}` sha256 `{s['sha256']}` ({s['rows_in']} rows)" for s in sources
        ]
    rejected = manifest.get("rejected_by_reason", {})
    if rejected:
        lines += ["", "Rejected rows by reason: " + ", ".join(f"{k} {v}" for k, v in rejected.items())]
    lines += ["", "## Evaluation and gate", "", gate_report.replace("# Gate:", "### Gate:", 1).strip(), ""]
    lines += ["## Export parity", "", parity.strip(), ""]
    lines += [
        "## Intended use and limits",
        "",
        f"- Intended use: {INTENDED_USE.get(task_type, task_type)}, on inputs like the eval rows above.",
        (
            "- Measured only on the held-out split of the data named here; inputs unlike it (other languages, "
            "other domains, longer texts than the training maximum) were not evaluated."
        ),
        (
            "- The gate's thresholds are the project's own; passing them is not a safety review. Check outputs "
            "before acting on them where mistakes are costly."
        ),
        (
            "- The training data may carry the biases and errors of its sources; PII was redacted by pattern "
            "(names are not detected)."
        ),
        "",
        "## Lineage",
        "",
        "| step | sha256 | uri |",
        "|---|---|---|",
    ]
    for step in LINEAGE_STEPS:
        if step in lineage:
            lines.append(f"| {step} | `{lineage[step].get('sha256', '')}` | {lineage[step].get('uri', '')} |")
    return "\n".join(lines) + "\n"
