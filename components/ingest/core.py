"""ingest: read the data locators, recognise the shape, map every row onto the canonical columns.

Every source row ends accepted (a canonical row) or rejected (a line in the rejects file with its
source, row number, a stable reason code from components/common/events.py and a detail), so
``rows_in == accepted + sum(rejected)`` always. Structured tasks also check each target against the
task's JSON Schema here: a row the model could never be scored on is not training data.

The optional explicit eval locator is read first and its rows are tagged ``source = "eval"``; clean
keeps the first of any duplicates, so an eval row always wins over a training copy of it.
Rows stream from the source to a parquet writer: memory is bounded by a batch, not the input size.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common.events import DataError, event
from components.common.options import StepOptions
from components.common.tables import RowWriter
from components.ingest.shapes import Hypothesis, Reject, inspect_rows, map_row, resolve_shape
from components.ingest.sources import iter_records, materialize, parse_locator, sample_rows

SAMPLE_ROWS = 20  # rows read to recognise the shape
MAX_SAMPLES = 5  # row numbers kept per reason code for messages and the summary


@dataclass
class IngestOptions(StepOptions):
    JSON_INPUTS = ("output_schema", "labels")
    LIST_INPUTS = ("label_normalize", "chat_fixes")

    shape: str = "auto"  # auto | prompt_completion | alpaca | messages | sharegpt
    prompt_field: str = "prompt"  # columns of the prompt_completion shape
    completion_field: str = "completion"
    group_field: str = "group"  # "" = no group column: a row (or conversation) is its own group
    id_field: str = "id"  # "" = "<source>:<row number>"
    output_schema: dict | None = None  # structured tasks: every target must validate
    labels: list[str] | None = None  # classification tasks: every target must be one of these
    label_normalize: tuple[str, ...] = ()  # strip, lower: how a target is matched to a declared label
    chat_fixes: tuple[str, ...] = ()  # shapes.CHAT_FIXES applied to conversations (counted in ``fixed``)
    max_row_bytes: int = 1_000_000  # bytes of one source row; larger rows are ROW_TOO_LARGE
    force_shape: bool = False  # take the best shape hypothesis even below the auto-pick confidence


@dataclass
class SourceStats:
    locator: str
    format: str
    rows_in: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    fixed: Counter = field(default_factory=Counter)  # data.chat.fix -> accepted rows it repaired
    sha256: str = ""  # of the source file(s) read; "" for a streamed hub dataset


@dataclass
class IngestResult:
    shape: Hypothesis
    sources: dict[str, SourceStats]  # "train" / "eval"
    samples: dict[str, list[str]] = field(default_factory=dict)  # reason -> "source:row" examples
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return sum(s.rows_in for s in self.sources.values())

    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in self.sources.values())

    @property
    def rejected(self) -> Counter:
        total: Counter = Counter()
        for s in self.sources.values():
            total.update(s.rejected)
        return total

    @property
    def fixed(self) -> Counter:
        total: Counter = Counter()
        for s in self.sources.values():
            total.update(s.fixed)
        return total


def _sha256_of(path: Path | None) -> str:
    from components.common.provenance import sha256_path

    return sha256_path(path) if path is not None else ""


class _Validator:
    """Target check for structured tasks: parse as JSON, then validate against the schema.

    jsonschema-rs (Rust) answers valid/invalid in about a microsecond a row, three orders of magnitude
    faster than the pure-Python jsonschema on the travel schema (oneOf over $refs) — the difference
    between ingesting a million rows in seconds or in tens of minutes. The pure-Python validator, the
    one evaluation uses, only builds the message for a row already found invalid.
    """

    def __init__(self, schema: dict | None):
        self.fast = self.slow = None
        if schema is not None:
            import jsonschema_rs

            from components.common.task import JsonCanonicalizer, schema_validator

            self.slow = schema_validator(schema)  # also checks the schema itself, with a clear error
            # the target as training sees it: the schema's key order, compact (what constrained decoding emits)
            self.canonical = JsonCanonicalizer(schema)
            # formats are annotations only, as in jsonschema (and evaluation): do not assert them here
            self.fast = jsonschema_rs.validator_for(schema, validate_formats=False)
            import orjson

            self.loads, self.decode_error = orjson.loads, orjson.JSONDecodeError

    def check(self, completion: str) -> str:
        """The completion as training will see it, or ``Reject``: a structured target must be JSON valid
        against the schema, and is rewritten in the schema's key order with compact separators."""
        if self.fast is None:
            return completion
        try:
            value = self.loads(completion)
        except self.decode_error:
            try:  # orjson refuses NaN, 1e400 and lone surrogates, which json (and evaluation) accept
                value = json.loads(completion)
            except ValueError as e:
                raise Reject("TARGET_NOT_JSON", str(e)) from None
        if not self.fast.is_valid(value):
            # the verdict is evaluation's validator's: the fast one differs on regex classes such as \d
            # (ASCII-only there, Unicode in Python), so a row only it rejects is accepted
            err = next(iter(self.slow.iter_errors(value)), None)
            if err is not None:
                where = "/".join(str(p) for p in err.absolute_path) or "(root)"
                raise Reject("TARGET_SCHEMA", f"at {where}: {err.message}")
        return self.canonical(value)


def resolve(train_locator: str, options: IngestOptions, workdir: str | Path) -> Hypothesis:
    """The shape to use: the configured one, or the best hypothesis on a sample of the training rows."""
    if options.shape != "auto":
        fields = {"prompt": options.prompt_field, "completion": options.completion_field}
        return Hypothesis(options.shape, 1.0, "set in the config (data.shape / data.fields)", fields)
    loc, path = materialize(parse_locator(train_locator), workdir)
    return resolve_shape(inspect_rows(sample_rows(loc, path, SAMPLE_ROWS)), force=options.force_shape)


def ingest(
    train_locator: str,
    eval_locator: str,
    options: IngestOptions,
    out_path: str | Path,
    rejects_path: str | Path,
) -> IngestResult:
    """Map every row of the locators to ``out_path`` (parquet) and every reject to ``rejects_path`` (JSONL)."""
    with tempfile.TemporaryDirectory() as tmp:
        shape = resolve(train_locator, options, tmp)
        result = IngestResult(shape=shape, sources={})
        result.events.append(event("ingest", "SHAPE_DETECTED", 0, f"{shape.shape}: {shape.rationale}"))
        validator = _Validator(options.output_schema)
        labels = _Labels(options.labels, options.label_normalize)
        seen_ids: set[str] = set()
        Path(rejects_path).parent.mkdir(parents=True, exist_ok=True)
        with RowWriter(out_path) as writer, open(rejects_path, "w", encoding="utf-8") as rejects:
            for source, locator in (("eval", eval_locator), ("train", train_locator)):
                if not locator:
                    continue
                loc, path = materialize(parse_locator(locator), tmp)
                stats = SourceStats(locator=locator, format=loc.format, sha256=_sha256_of(path))
                result.sources[source] = stats
                for rec in iter_records(loc, path, options.max_row_bytes):
                    stats.rows_in += 1
                    code, detail, raw = rec.reason, rec.detail, rec.raw
                    if rec.value is not None:
                        try:
                            applied: list[str] = []
                            row = _canonical(
                                rec.value,
                                source,
                                rec.row,
                                shape,
                                options,
                                validator,
                                labels,
                                seen_ids,
                                applied,
                            )
                            writer.write(row)
                            stats.accepted += 1
                            stats.fixed.update(applied)
                            continue
                        except Reject as r:
                            code, detail = r.code, r.detail
                            raw = json.dumps(rec.value, ensure_ascii=False, default=str)[:200]
                    stats.rejected[code] += 1
                    examples = result.samples.setdefault(code, [])
                    if len(examples) < MAX_SAMPLES:
                        examples.append(f"{source}:{rec.row}")
                    record = {"source": source, "row": rec.row, "code": code, "detail": detail, "raw": raw}
                    rejects.write(json.dumps(record, ensure_ascii=False) + "\n")
                result.events.append(_read_event(source, stats))
                for fix, count in sorted(stats.fixed.items()):
                    result.events.append(event("ingest", "CHAT_FIXED", count, f"{source}: {fix}", fix=fix))
                for code, count in sorted(stats.rejected.items()):
                    where = ", ".join(e for e in result.samples[code] if e.startswith(source))
                    result.events.append(
                        event("ingest", code, count, f"{source}: e.g. {where}", source=source)
                    )
    if result.accepted == 0:
        raise DataError(
            f"no usable rows in {train_locator!r} ({result.rows_in} read, all rejected: "
            f"{dict(result.rejected)}). Fix: check data.shape / data.fields against `slmforge data inspect`"
        )
    return result


def _read_event(source: str, stats: SourceStats) -> dict:
    return event(
        "ingest",
        "ROWS_READ",
        stats.rows_in,
        f"{source} {stats.locator}: {stats.rows_in} rows = {stats.accepted} accepted + "
        f"{sum(stats.rejected.values())} rejected",
        source=source,
        locator=stats.locator,
        format=stats.format,
        sha256=stats.sha256,
        accepted=stats.accepted,
        rejected=dict(stats.rejected),
    )


class _Labels:
    """Classification targets against task.labels: each maps to a declared label (after the configured
    normalisation) or the row is LABEL_UNKNOWN, at ingest, seconds into a run instead of after training."""

    def __init__(self, labels: list[str] | None, normalize: tuple[str, ...]):
        self.normalize = normalize
        self.table = {self.key(label): label for label in labels or []}

    def key(self, text: str) -> str:
        if "strip" in self.normalize:
            text = text.strip()
        return text.lower() if "lower" in self.normalize else text

    def check(self, completion: str) -> str:
        if not self.table:
            return completion
        label = self.table.get(self.key(completion))
        if label is None:
            shown = ", ".join(repr(x) for x in self.table.values())
            hint = (
                "" if self.normalize else " (data.labels.normalize: [strip, lower] matches case and padding)"
            )
            raise Reject("LABEL_UNKNOWN", f"{completion[:80]!r} is not one of {shown}{hint}")
        return label


def _canonical(
    value: dict,
    source: str,
    row_no: int,
    shape: Hypothesis,
    options: IngestOptions,
    validator: _Validator,
    labels: _Labels,
    seen: set,
    applied: list[str],
) -> dict:
    history, prompt, completion = map_row(value, shape.shape, shape.fields, options.chat_fixes, applied)
    completion = labels.check(validator.check(completion))
    row_id = value.get(options.id_field) if options.id_field else None
    row_id = str(row_id) if row_id not in (None, "") else f"{source}:{row_no}"
    if row_id in seen:
        raise Reject("DUPLICATE_ID", f"id {row_id!r} already used by an earlier row")
    seen.add(row_id)
    group = value.get(options.group_field) if options.group_field else None
    group = str(group) if group not in (None, "") else row_id
    return {
        "id": row_id,
        "group": group,
        "source": source,
        "history": history,
        "prompt": prompt,
        "completion": completion,
    }
