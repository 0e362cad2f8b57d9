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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.clean.dedupe import NearDupIndex, exact_key, normalize, resolve_near_duplicates
from components.clean.pii import PII_TYPES, find_pii, redact
from components.common.events import event
from components.common.tables import RowWriter, iter_row_batches

MAX_SAMPLES = 5


@dataclass
class CleanOptions:
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
    token_lengths: list[int] = field(default_factory=list)  # of kept-so-far rows, for the summary
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
        from components.common.task import conversation

        texts = [
            self.tokenizer.apply_chat_template(
                conversation(self.system_prompt, r["prompt"], r["completion"], r["history"]), tokenize=False
            )
            for r in rows
        ]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]


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


def clean(
    in_path: str | Path, out_path: str | Path, rejects_path: str | Path, options: CleanOptions
) -> CleanResult:
    if options.pii not in ("redact", "block", "off"):
        raise ValueError(f"data.clean.pii={options.pii!r}: use redact, block or off")
    result = CleanResult()
    count_tokens = _TokenCounter(options) if options.max_tokens > 0 else None
    near = NearDupIndex(threshold=options.near_dup_threshold) if options.near_dup_threshold > 0 else None
    first_of: dict[int, int] = {}  # exact key -> index of the kept row (in the pass-1 table)
    kept_ids: list[str] = []  # pass-1 table index -> id, source (for reject details)
    kept_eval = bytearray()
    eval_groups: set[str] = set()  # groups of the explicit eval set (its rows come first)
    Path(rejects_path).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, open(rejects_path, "w", encoding="utf-8") as fh:
        rejects = _Rejects(fh, result)
        stage1 = Path(tmp) / "pass1.parquet"
        with RowWriter(stage1) as writer:
            for batch in iter_row_batches(in_path):
                result.rows_in += len(batch)
                batch = _pii_pass(batch, options, result, rejects)
                if count_tokens is not None:
                    batch = _length_pass(batch, count_tokens(batch), options.max_tokens, result, rejects)
                texts = []
                for row in batch:
                    if row["source"] == "eval":
                        eval_groups.add(row["group"])
                    elif row["group"] in eval_groups:
                        rejects.add(row, "EVAL_LEAK", f"shares group {row['group']!r} with the eval set")
                        continue
                    text = row_text(row)
                    key = exact_key(text)
                    if key in first_of:
                        i = first_of[key]
                        code = "EVAL_LEAK" if kept_eval[i] and row["source"] != "eval" else "DUPLICATE"
                        rejects.add(row, code, f"same as {kept_ids[i]}")
                        continue
                    first_of[key] = len(kept_ids)
                    kept_ids.append(row["id"])
                    kept_eval.append(row["source"] == "eval")
                    writer.write(row)
                    texts.append(normalize(text))
                if near is not None and texts:
                    near.add(texts)
        del first_of
        removed: dict[int, int] = {}
        if near is not None:
            pairs = near.candidate_pairs()
            texts = _texts_of(stage1, {i for p in pairs for i in p})
            removed = resolve_near_duplicates(pairs, texts.__getitem__, options.near_dup_threshold)
        with RowWriter(out_path) as writer:
            index = 0
            for batch in iter_row_batches(stage1):
                for row in batch:
                    if index in removed:
                        k = removed[index]
                        code = "EVAL_LEAK" if kept_eval[k] and row["source"] != "eval" else "NEAR_DUPLICATE"
                        rejects.add(row, code, f"near-duplicate of {kept_ids[k]}")
                    else:
                        writer.write(row)
                    index += 1
        result.kept = writer.rows
    result.events = _events(result)
    return result


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


def _texts_of(path: Path, wanted: set[int]) -> dict[int, str]:
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
    if result.token_lengths:
        s = sorted(result.token_lengths)
        pct = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
        lines += [
            "",
            f"Tokens per example (kept rows, limit {options.max_tokens}): p50 {pct(0.5)}, p95 {pct(0.95)}, max {s[-1]}.",
        ]
    return "\n".join(lines) + "\n"


__all__ = ["CleanOptions", "CleanResult", "clean", "find_pii", "report_markdown", "row_text"]
