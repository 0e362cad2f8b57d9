"""clean: PII redaction, token-length filter, exact and near-duplicate removal (within the data and
across train/eval) over the canonical table — streaming, in three passes over parquet on disk.

Pass 1 redacts (or blocks) PII, drops rows whose rendered example is longer than the token budget
(the real tokenizer and chat template), drops exact duplicates (keep the first) and feeds the
survivors' text to a MinHash LSH index. Pass 2 verifies the index's candidate pairs by exact Jaccard.
Pass 3 writes every row that survived.

Eval-set rows come first in the table (ingest reads the eval locator first), and the first row of a
duplicate cluster is the one kept, so a training row that repeats an evaluation row is the one
removed (``EVAL_LEAK``): the evaluation set stays as the user gave it and training never sees it.
"""

from __future__ import annotations

import json
import tempfile
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from components.clean.dedupe import resolve_near_duplicates
from components.clean.minhash import NearDupIndex
from components.clean.pii import PII_TYPES, find_pii, redact
from components.clean.shingles import exact_key, normalize
from components.common.events import event
from components.common.options import StepOptions
from components.common.tables import RowWriter, iter_row_batches

MAX_SAMPLES = 5


@dataclass
class CleanOptions(StepOptions):
    LIST_INPUTS = ("pii_types",)
    RENAMED: ClassVar[dict[str, str]] = {"base_model": "tokenizer"}

    pii: str = "redact"  # redact | block | off
    pii_types: tuple[str, ...] = PII_TYPES
    near_dup_threshold: float = 0.9  # Jaccard of character 5-gram shingles; -1 = exact duplicates only
    max_tokens: int = -1  # tokens of the rendered example (prompt + completion); -1 = no length filter
    tokenizer: str = ""  # model locator whose tokenizer and chat template count the tokens
    system_prompt: str = ""  # rendered before rows without a system turn, as in training


@dataclass
class CleanResult:
    rows_in: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)  # redacted findings per PII type
    pii_rows: int = 0
    token_lengths: array = field(default_factory=lambda: array("I"))  # tokens per example within the limit
    near_dup_stats: Any = None  # NearDupResult: candidate pairs, accepted on estimate, verified
    samples: dict[str, list[str]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


def row_text(row: dict[str, str]) -> str:
    """What duplicate detection compares: the whole example (context, prompt and target)."""
    history = "" if row["history"] == "[]" else row["history"]
    return f"{history}\n{row['prompt']}\n{row['completion']}"


def _redact_row(row: dict[str, str], options: CleanOptions) -> tuple[dict[str, str] | None, Counter]:
    """The row with PII replaced (or None when blocked) and the findings per type."""
    found: Counter = Counter()
    out = dict(row)
    for col in ("prompt", "completion"):
        text, counts = redact(row[col], options.pii_types)
        out[col] = text
        found.update(counts)
    if row["history"] != "[]":
        turns = json.loads(row["history"])
        for t in turns:
            t["content"], counts = redact(t["content"], options.pii_types)
            found.update(counts)
        out["history"] = json.dumps(turns, ensure_ascii=False)
    if found and options.pii == "block":
        return None, found
    return out, found


class _TokenCounter:
    """Tokens of each rendered example, exactly as training renders it (components/common/task.py)."""

    def __init__(self, options: CleanOptions):
        from components.common.models import load_tokenizer, resolve_base

        self.tokenizer = load_tokenizer(resolve_base(options.tokenizer))
        self.system_prompt = options.system_prompt

    def __call__(self, rows: list[dict[str, str]]) -> list[int]:
        from components.common.task import training_token_ids

        return [len(ids) for ids in training_token_ids(self.tokenizer, self.system_prompt, rows)]


class _Rejects:
    def __init__(self, fh, result: CleanResult):
        self.fh, self.result = fh, result

    def add(self, row: dict[str, str], code: str, detail: str) -> None:
        self.result.rejected[code] += 1
        examples = self.result.samples.setdefault(code, [])
        if len(examples) < MAX_SAMPLES:
            examples.append(row["id"])
        record = {
            "source": row["source"],
            "row": row["id"],
            "code": code,
            "detail": detail,
            "raw": row["prompt"][:200],
        }
        self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def first_occurrence(keys):
    """For each row, the index of the first row with the same exact key (itself when it is the first)."""
    import numpy as np

    order = np.argsort(keys, kind="stable")  # stable: within one key, rows stay in index order
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    sizes = np.diff(np.append(starts, len(keys)))
    first = np.empty(len(keys), dtype=np.int64)
    first[order] = np.repeat(order[starts], sizes)
    return first


def clean(
    in_path: str | Path, out_path: str | Path, rejects_path: str | Path, options: CleanOptions
) -> CleanResult:
    """Clean ``in_path`` into ``out_path``; every removed row goes to ``rejects_path`` with its reason.

    Memory per row is a few bytes (an exact-duplicate key, an eval flag, the near-duplicate index's band
    hashes and sketch), never the rows themselves: rows stream through parquet files on disk."""
    import numpy as np

    if options.pii not in ("redact", "block", "off"):
        raise ValueError(f"data.clean.pii={options.pii!r}: use redact, block or off")
    result = CleanResult()
    count_tokens = _TokenCounter(options) if options.max_tokens > 0 else None
    near = NearDupIndex(threshold=options.near_dup_threshold) if options.near_dup_threshold > 0 else None
    keys: list[np.ndarray] = []  # per pass-1 row: 64-bit exact key of its normalised text
    evals: list[np.ndarray] = []  # per pass-1 row: from the explicit eval set?
    eval_groups: set[str] = set()  # groups of the explicit eval set (its rows come first)
    Path(rejects_path).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, open(rejects_path, "w", encoding="utf-8") as fh:
        rejects = _Rejects(fh, result)
        stage1 = Path(tmp) / "pass1.parquet"
        with RowWriter(stage1) as writer:
            for batch in iter_row_batches(in_path):
                result.rows_in += len(batch)
                batch = _pii_pass(batch, options, result, rejects)
                if count_tokens is not None and batch:
                    batch = _length_pass(batch, count_tokens(batch), options.max_tokens, result, rejects)
                batch = _group_leak_pass(batch, eval_groups, rejects)
                texts = [normalize(row_text(r)) for r in batch]
                keys.append(np.fromiter((exact_key(t) for t in texts), dtype=np.uint64, count=len(texts)))
                evals.append(
                    np.fromiter((r["source"] == "eval" for r in batch), dtype=bool, count=len(batch))
                )
                for row in batch:
                    writer.write(row)
                if near is not None and texts:
                    near.add(texts)
        is_eval = np.concatenate(evals) if evals else np.zeros(0, dtype=bool)
        first = first_occurrence(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
        removed: dict[int, int] = {}
        if near is not None and near.size > 1:
            i, j, est = near.candidate_pairs()
            near = None  # free the index (~170 MB per million rows) before resolve builds shingle arrays
            found = resolve_near_duplicates(
                i, j, est, lambda wanted: _texts_of(stage1, wanted), options.near_dup_threshold
            )
            removed, result.near_dup_stats = found.removed, found
        result.kept = _write_survivors(stage1, out_path, first, removed, is_eval, rejects)
    result.events = _events(result)
    return result


def _group_leak_pass(batch, eval_groups: set[str], rejects: _Rejects):
    out = []
    for row in batch:
        if row["source"] == "eval":
            eval_groups.add(row["group"])
        elif row["group"] in eval_groups:
            rejects.add(row, "EVAL_LEAK", f"shares group {row['group']!r} with the eval set")
            continue
        out.append(row)
    return out


def _write_survivors(
    stage1: Path, out_path, first, removed: dict[int, int], is_eval, rejects: _Rejects
) -> int:
    """Pass 3: write every pass-1 row that is neither an exact nor a near duplicate of an earlier one.
    A kept row always comes before the rows it displaces, so its id is known when they are reached.
    A near-duplicate cluster is connected by pairs at Jaccard >= the threshold (union-find, the usual
    MinHash-dedup clustering); its earliest row is kept, so a removed row may reach it through a chain."""
    import numpy as np

    targets = set(first[first != np.arange(len(first))].tolist()) | set(removed.values())
    id_of: dict[int, str] = {}
    index = 0
    with RowWriter(out_path) as writer:
        for batch in iter_row_batches(stage1):
            for row in batch:
                if index in targets:
                    id_of[index] = row["id"]
                k = int(first[index])
                if k != index or index in removed:
                    exact = k != index
                    k = k if exact else removed[index]
                    code = "DUPLICATE" if exact else "NEAR_DUPLICATE"
                    if is_eval[k] and row["source"] != "eval":
                        code = "EVAL_LEAK"
                    rejects.add(
                        row, code, f"{'same as' if exact else 'near-duplicate cluster of'} {id_of[k]}"
                    )
                else:
                    writer.write(row)
                index += 1
    return writer.rows


def _pii_pass(batch, options: CleanOptions, result: CleanResult, rejects: _Rejects):
    if options.pii == "off":
        return batch
    out = []
    for row in batch:
        cleaned, found = _redact_row(row, options)
        if found:
            result.pii_rows += 1
            if cleaned is None:
                rejects.add(row, "PII_BLOCKED", ", ".join(f"{k} x{v}" for k, v in sorted(found.items())))
                continue
            result.pii.update(found)
        out.append(cleaned)
    return out


def _length_pass(batch, lengths: list[int], max_tokens: int, result: CleanResult, rejects: _Rejects):
    out = []
    for row, n in zip(batch, lengths, strict=True):
        if n > max_tokens:
            rejects.add(row, "OVER_LENGTH", f"{n} tokens > {max_tokens}")
            continue
        result.token_lengths.append(n)
        out.append(row)
    return out


def _texts_of(path: Path, wanted) -> dict[int, str]:
    """Normalised texts of the pass-1 rows at the ``wanted`` indices, in one streaming pass."""
    wanted = set(wanted)
    texts: dict[int, str] = {}
    index = 0
    for batch in iter_row_batches(path):
        for row in batch:
            if index in wanted:
                texts[index] = normalize(row_text(row))
            index += 1
    return texts


def _events(result: CleanResult) -> list[dict[str, Any]]:
    events = []
    if result.pii:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(result.pii.items()))
        events.append(
            event("clean", "PII_REDACTED", result.pii_rows, f"rows with PII redacted: {counts}", **result.pii)
        )
    for code, count in sorted(result.rejected.items()):
        events.append(event("clean", code, count, f"e.g. {', '.join(result.samples.get(code, []))}"))
    events.append(
        event(
            "clean",
            "ROWS_KEPT",
            result.kept,
            f"{result.rows_in} rows in = {result.kept} kept + {sum(result.rejected.values())} removed",
        )
    )
    return events


def report_markdown(result: CleanResult, options: CleanOptions) -> str:
    lines = [
        "# Cleaning report",
        "",
        f"{result.rows_in} rows in = **{result.kept} kept** + {sum(result.rejected.values())} removed.",
        "",
        "| removed because | rows |",
        "|---|---:|",
        *[f"| `{code}` | {count} |" for code, count in result.rejected.most_common()],
        "",
        f"PII ({options.pii}; types {', '.join(options.pii_types)}): {result.pii_rows} rows; "
        + (", ".join(f"{k} {v}" for k, v in sorted(result.pii.items())) or "none found"),
        "",
        "Names are not detected (no offline name recogniser is shipped).",
    ]
    stats = result.near_dup_stats
    if stats is not None:
        lines += [
            "",
            (
                f"Near duplicates (Jaccard >= {options.near_dup_threshold}, character 5-grams): "
                f"{stats.candidates} candidate pairs from MinHash LSH, {stats.accepted_on_estimate} accepted "
                f"on the sketch estimate, {stats.verified} checked exactly ({stats.verified_accepted} at or "
                "above the threshold)."
            ),
        ]
    if result.token_lengths:
        s = sorted(result.token_lengths)
        pct = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
        lines += [
            "",
            f"Tokens per example (kept rows, limit {options.max_tokens}): p50 {pct(0.5)}, p95 {pct(0.95)}, max {s[-1]}.",
        ]
    return "\n".join(lines) + "\n"


__all__ = ["CleanOptions", "CleanResult", "clean", "find_pii", "report_markdown", "row_text"]
