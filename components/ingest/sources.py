"""Data locators and the records they hold, streamed.

A locator names where rows live and, optionally, their format:

    jsonl:PATH   json:PATH   csv:PATH   parquet:PATH   PATH (format from the extension / folder)
    PATH is local or gs://bucket/object (a folder for parquet parts or an HF ``save_to_disk`` dataset)
    hf:NAME:SPLIT  or  hf:NAME:CONFIG:SPLIT   a Hugging Face hub dataset, streamed

``iter_records`` yields one ``Record`` per source row, in order, numbered from 1: either the row as a
dict, or the reason it cannot be one (bad bytes, bad JSON, a cut-off last line, an oversized row).
Nothing is skipped silently: blank JSONL lines are the only lines that are not rows.
Memory stays bounded: JSONL/CSV are read line by line, parquet and HF datasets in arrow batches.
JSON array files (``json:``) are the exception — parsed whole — so they are capped at ``JSON_MAX_BYTES``.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "json", "csv", "parquet", "hf_disk", "hf_hub")
JSON_MAX_BYTES = 512 << 20  # a JSON array is parsed in one piece; bigger inputs should be JSONL
BATCH_ROWS = 8192
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class LocatorError(ValueError):
    pass


@dataclass(frozen=True)
class Locator:
    text: str  # as the user wrote it
    format: str  # one of FORMATS, or "" = decide from the path once it is local
    path: str  # local path, gs:// URI, or hub dataset name
    config: str = ""  # hub dataset config name
    split: str = ""  # hub dataset split


@dataclass
class Record:
    row: int  # 1-based row number in the source (JSONL: the line number)
    value: dict[str, Any] | None  # the row, or None when rejected
    reason: str = ""  # reason code when rejected (components/common/events.py)
    detail: str = ""
    raw: str = ""  # the start of the raw row, for the rejects file


def parse_locator(text: str) -> Locator:
    text = text.strip()
    if not text:
        raise LocatorError("empty data locator. Fix: give a path, gs:// URI, or hf:NAME:SPLIT")
    if text.startswith("hf:"):
        parts = text[3:].split(":")
        if len(parts) == 2 and all(parts):
            return Locator(text, "hf_hub", parts[0], split=parts[1])
        if len(parts) == 3 and all(parts):
            return Locator(text, "hf_hub", parts[0], config=parts[1], split=parts[2])
        raise LocatorError(f"{text!r}: a hub locator is hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
    head, sep, rest = text.partition(":")
    fmt, path = (head, rest) if sep and head in ("jsonl", "json", "csv", "parquet") else ("", text)
    if path.startswith("gs://") and not path[5:].split("/", 1)[0]:
        raise LocatorError(f"{text!r}: a gs:// locator names a bucket: gs://BUCKET/PATH")
    if "://" in path and not path.startswith("gs://"):
        scheme = path.split("://", 1)[0]
        raise LocatorError(
            f"{text!r}: {scheme}:// is not read; use a local path, gs://BUCKET/PATH, or hf:NAME:SPLIT"
        )
    return Locator(text, fmt, path)


def _format_of(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            return "hf_disk"
        if (path / "dataset_dict.json").is_file():
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
            raise LocatorError(
                f"{path}: an HF DatasetDict with splits {splits}; point the locator at one split's folder, "
                f"e.g. {path / (splits[0] if splits else 'train')}"
            )
        if any(path.glob("*.parquet")):
            return "parquet"
        raise LocatorError(f"{path}: a folder with neither parquet files nor an HF save_to_disk dataset")
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise LocatorError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}. "
            "Fix: prefix the locator with jsonl:, json:, csv: or parquet:"
        )
    return fmt


def _download_gcs(uri: str, workdir: Path) -> Path:
    """Copy a gs:// object, or every object under a gs:// prefix, into ``workdir`` (streamed to disk)."""
    from google.cloud import storage

    from components.common.gcs import download_prefix, split_uri

    workdir = Path(tempfile.mkdtemp(prefix="gcs-", dir=workdir))  # one folder per locator: no mixing
    bucket_name, name = split_uri(uri)
    client = storage.Client()
    blob = client.bucket(bucket_name).blob(name)
    if name and not name.endswith("/") and blob.exists():
        dest = workdir / Path(name).name
        blob.download_to_filename(str(dest))
        return dest
    return download_prefix(uri, workdir / (Path(name.rstrip("/")).name or bucket_name), client)


def materialize(loc: Locator, workdir: str | Path) -> tuple[Locator, Path | None]:
    """The locator with a local path (gs:// downloaded into ``workdir``) and its format decided."""
    if loc.format == "hf_hub":
        return loc, None
    if loc.path.startswith("gs://"):
        path = _download_gcs(loc.path, Path(workdir))
    else:
        path = Path(loc.path)
        if not path.exists():
            raise FileNotFoundError(f"data locator {loc.text!r}: {path} does not exist")
        if not (path.is_file() or path.is_dir()):  # /dev/zero, a pipe, a socket: endless or blocking reads
            raise LocatorError(
                f"data locator {loc.text!r}: {path} is not a regular file or folder (a device, pipe or "
                "socket). Fix: point it at a data file or folder"
            )
    return Locator(loc.text, loc.format or _format_of(path), str(path), loc.config, loc.split), path


def _preview(raw: bytes | str, limit: int = 200) -> str:
    if isinstance(raw, bytes):
        raw = raw[:limit].decode("utf-8", errors="replace")
    return raw[:limit]


def _jsonl(path: Path, max_row_bytes: int) -> Iterator[Record]:
    import orjson  # ~6x faster than json.loads on these rows; ingest speed is parsing speed

    with open(path, "rb") as fh:
        row = 0
        # at most max_row_bytes + 1 bytes of a line are held: a file with no newline cannot fill the memory
        while line := fh.readline(max_row_bytes + 1):
            row += 1
            if len(line) > max_row_bytes:
                size, head = len(line), line
                while not line.endswith(b"\n") and (line := fh.readline(1 << 20)):  # skip the rest of it
                    size += len(line)
                more = "" if line.endswith(b"\n") or not line else "+"
                yield Record(
                    row, None, "ROW_TOO_LARGE", f"{size:,}{more} bytes > {max_row_bytes:,}", _preview(head)
                )
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                if not line.strip():
                    continue  # blank lines are not rows (their line number is still counted)
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as u:
                    yield Record(row, None, "NOT_UTF8", f"byte {u.start}: {u.reason}", _preview(line))
                    continue
                # only the last line can lack its newline; if it also fails to parse, the file was cut off
                reason = "NOT_JSON" if line.endswith(b"\n") else "TRUNCATED"
                yield Record(row, None, reason, str(e), _preview(line))
                continue
            if not isinstance(value, dict):
                yield Record(row, None, "NOT_OBJECT", f"a JSON {type(value).__name__}", _preview(line))
                continue
            yield Record(row, value)


def _json(path: Path) -> Iterator[Record]:
    size = path.stat().st_size
    if size > JSON_MAX_BYTES:
        raise LocatorError(
            f"{path}: a {size:,}-byte JSON document is parsed whole; above {JSON_MAX_BYTES:,} bytes "
            "convert it to JSONL (one object per line), which is streamed"
        )
    try:
        doc = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LocatorError(f"{path}: not a JSON document ({e}); for one object per line use jsonl:") from None
    if isinstance(doc, dict):  # {"data": [...]} / {"rows": [...]}: the one list-valued key
        lists = [k for k, v in doc.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise LocatorError(f"{path}: a JSON object; expected an array of rows or one key holding it")
        doc = doc[lists[0]]
    if not isinstance(doc, list):
        raise LocatorError(f"{path}: the JSON document is a {type(doc).__name__}, expected an array of rows")
    for i, value in enumerate(doc, start=1):
        if isinstance(value, dict):
            yield Record(i, value)
        else:
            yield Record(i, None, "NOT_OBJECT", f"a JSON {type(value).__name__}", _preview(json.dumps(value)))


def _csv(path: Path, max_row_bytes: int) -> Iterator[Record]:
    csv.field_size_limit(sys.maxsize)  # a long field is judged by max_row_bytes, not by the csv module
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad row does not stop the file
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark that would otherwise rename column 1
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        for row_no, cells in enumerate(reader, start=1):
            raw = ",".join(cells)
            if not cells or (len(cells) == 1 and not cells[0]):
                continue
            if len(raw.encode("utf-8", errors="surrogateescape")) > max_row_bytes:
                yield Record(row_no, None, "ROW_TOO_LARGE", f"> {max_row_bytes:,} bytes", raw[:200])
                continue
            try:
                raw.encode("utf-8")
            except UnicodeEncodeError as e:
                yield Record(
                    row_no,
                    None,
                    "NOT_UTF8",
                    f"character {e.start}",
                    raw[:200].encode(errors="replace").decode(),
                )
                continue
            if len(cells) != len(header):
                what = "missing" if len(cells) < len(header) else "extra"
                reason = "MISSING_FIELD" if what == "missing" else "WRONG_TYPE"
                detail = f"{len(cells)} cells for {len(header)} columns ({what} cells)"
                yield Record(row_no, None, reason, detail, raw[:200])
                continue
            yield Record(row_no, dict(zip(header, cells, strict=True)))


def _parquet(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq

    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    for f in files:
        for batch in pq.ParquetFile(str(f)).iter_batches(batch_size=BATCH_ROWS):
            yield from batch.to_pylist()


def _hf_disk(path: Path) -> Iterator[dict]:
    from datasets import load_from_disk

    ds = load_from_disk(str(path))  # memory-mapped arrow: rows are read batch by batch
    for batch in ds.iter(batch_size=BATCH_ROWS):
        keys = list(batch)
        for i in range(len(batch[keys[0]]) if keys else 0):
            yield {k: batch[k][i] for k in keys}


def _hf_hub(loc: Locator) -> Iterator[dict]:
    from datasets import load_dataset

    ds = load_dataset(loc.path, loc.config or None, split=loc.split, streaming=True)
    yield from ds


def iter_records(loc: Locator, path: Path | None, max_row_bytes: int) -> Iterator[Record]:
    """Every row of a materialized locator, in order (see module docstring)."""
    if loc.format == "jsonl":
        yield from _jsonl(path, max_row_bytes)
    elif loc.format == "json":
        yield from _json(path)
    elif loc.format == "csv":
        yield from _csv(path, max_row_bytes)
    elif loc.format in ("parquet", "hf_disk", "hf_hub"):
        readers = {
            "parquet": lambda: _parquet(path),
            "hf_disk": lambda: _hf_disk(path),
            "hf_hub": lambda: _hf_hub(loc),
        }
        for i, value in enumerate(readers[loc.format](), start=1):
            size = len(json.dumps(value, default=str, ensure_ascii=False).encode())
            if size > max_row_bytes:
                yield Record(i, None, "ROW_TOO_LARGE", f"{size:,} bytes > {max_row_bytes:,}", "")
            else:
                yield Record(i, value)
    else:
        raise LocatorError(f"{loc.text!r}: unknown format {loc.format!r}; use one of {', '.join(FORMATS)}")


def sample_rows(loc: Locator, path: Path | None, n: int = 20) -> list[dict[str, Any]]:
    """The first ``n`` readable rows (for shape inspection)."""
    out = []
    for rec in iter_records(loc, path, max_row_bytes=1 << 30):
        if rec.value is not None:
            out.append(rec.value)
            if len(out) >= n:
                break
    return out
