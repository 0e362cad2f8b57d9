"""ingest: read a JSONL locator (local path or gs://) and map each row onto the canonical columns.

Every input row is accounted for: it is accepted, or rejected with its 1-based line number and a
reason code. The spine is strict: any rejected row fails the stage with the first rejections listed
(nothing is dropped silently).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from components.common.tables import write_rows


@dataclass
class FieldMap:
    prompt: str = "prompt"
    completion: str = "completion"
    group: str = ""  # "" = no group column: each row is its own group
    id: str = ""  # "" = use the line number


@dataclass
class IngestResult:
    rows_in: int
    accepted: int
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason code, detail)


def local_copy(locator: str, workdir: str | Path) -> Path:
    """A local path for the locator: itself, or a download of a gs:// object into ``workdir``."""
    loc = locator.removeprefix("jsonl:")
    if not loc.startswith("gs://"):
        path = Path(loc)
        if not path.is_file():
            raise FileNotFoundError(f"data locator {locator!r}: no such file")
        return path
    from google.cloud import storage

    bucket, _, name = loc.removeprefix("gs://").partition("/")
    dest = Path(workdir) / Path(name).name
    storage.Client().bucket(bucket).blob(name).download_to_filename(str(dest))
    return dest


def _text(row: dict, column: str, line: int, rejected: list) -> str | None:
    if column not in row:
        rejected.append((line, "MISSING_FIELD", f"no {column!r} field"))
        return None
    value = row[column]
    if not isinstance(value, str):
        rejected.append((line, "WRONG_TYPE", f"{column!r} is {type(value).__name__}, expected a string"))
        return None
    if not value.strip():
        rejected.append((line, "EMPTY_FIELD", f"{column!r} is empty"))
        return None
    return value


def map_rows(lines, fields: FieldMap) -> tuple[list[dict[str, str]], IngestResult]:
    """Map JSONL lines (an iterable of str) onto canonical rows, accounting for each line."""
    rows: list[dict[str, str]] = []
    rejected: list[tuple[int, str, str]] = []
    seen_ids: set[str] = set()
    rows_in = 0
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines are not rows
        rows_in += 1
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            rejected.append((line_no, "NOT_JSON", e.msg))
            continue
        if not isinstance(raw, dict):
            rejected.append((line_no, "NOT_OBJECT", f"a JSON {type(raw).__name__}, expected an object"))
            continue
        before = len(rejected)
        prompt = _text(raw, fields.prompt, line_no, rejected)
        completion = _text(raw, fields.completion, line_no, rejected)
        if len(rejected) > before:
            continue
        row_id = str(raw.get(fields.id, "")) if fields.id else ""
        row_id = row_id or f"row-{line_no}"
        if row_id in seen_ids:
            rejected.append((line_no, "DUPLICATE_ID", f"id {row_id!r} already used"))
            continue
        seen_ids.add(row_id)
        group = str(raw.get(fields.group, "")) if fields.group else ""
        rows.append({"id": row_id, "group": group or row_id, "prompt": prompt, "completion": completion})
    return rows, IngestResult(rows_in=rows_in, accepted=len(rows), rejected=rejected)


def ingest(locator: str, fields: FieldMap, out_path: str | Path) -> IngestResult:
    """Read ``locator``, write the canonical parquet table to ``out_path``; fail on any rejected row."""
    with tempfile.TemporaryDirectory() as tmp:
        path = local_copy(locator, tmp)
        with path.open(encoding="utf-8") as fh:
            rows, result = map_rows(fh, fields)
    if result.rejected:
        shown = "; ".join(f"line {n}: {code} ({detail})" for n, code, detail in result.rejected[:5])
        raise ValueError(
            f"{locator}: {len(result.rejected)} of {result.rows_in} rows rejected — {shown}. "
            "Fix the rows or the data.fields map in the config."
        )
    if not rows:
        raise ValueError(f"{locator}: no rows. Point data.train at a non-empty JSONL file.")
    write_rows(rows, out_path)
    return result
