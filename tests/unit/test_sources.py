"""Data locators: every form parses, and every format yields the same canonical rows.

The same five logical rows are written as JSONL, JSON (array and ``{"data": [...]}``), CSV, a parquet
file, a folder of parquet parts and an HF ``save_to_disk`` folder, locally and (for gs://) on a real
``gcp-storage-emulator`` server; ``ingest`` must read identical rows from each. No mocks.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.tables import read_rows
from components.ingest.core import IngestOptions, ingest
from components.ingest.sources import (
    Locator,
    LocatorError,
    Record,
    iter_records,
    materialize,
    parse_locator,
    sample_rows,
)

ROWS = [
    {"id": "r1", "group": "g1", "prompt": "Book a flight to Lisbon", "completion": '{"intent": "book"}'},
    {"id": "r2", "group": "g1", "prompt": "Réserve un hôtel à Zürich — 東京 ✈", "completion": "d'accord ✓"},
    {"id": "r3", "group": "g2", "prompt": "Paris, then\nRome", "completion": '{"a": 1, "b": "x, y"}'},
    {"id": "r4", "group": "g2", "prompt": 'say "hi"', "completion": "hi"},
    {"id": "r5", "group": "g3", "prompt": "last one", "completion": "done"},
]
CANONICAL = [(r["id"], r["group"], r["prompt"], r["completion"]) for r in ROWS]


# --- writers: each puts ROWS at ``base`` (a file name without extension, or a folder) ---------------


def write_jsonl(path: Path) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return path


def write_json_array(path: Path) -> Path:
    path.write_text(json.dumps(ROWS, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def write_json_object(path: Path) -> Path:
    path.write_text(json.dumps({"version": 2, "meta": {"n": 5}, "data": ROWS}), encoding="utf-8")
    return path


def write_csv(path: Path) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "group", "prompt", "completion"])
        writer.writeheader()
        writer.writerows(ROWS)
    assert b'"Paris, then\nRome"' in path.read_bytes()  # a quoted field with a comma and a newline
    return path


def write_parquet(path: Path, rows: list[dict] = ROWS) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_parquet_parts(path: Path, rows: list[dict] = ROWS) -> Path:
    path.mkdir()
    write_parquet(path / "part-00000.parquet", rows[:3])
    write_parquet(path / "part-00001.parquet", rows[3:])
    (path / "_SUCCESS").write_text("")  # not a parquet file: ignored
    return path


def write_hf_disk(path: Path, rows: list[dict] = ROWS) -> Path:
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(path))
    return path


# name -> (writer, file name, format the extension / folder implies)
WRITERS = {
    "jsonl": (write_jsonl, "data.jsonl", "jsonl"),
    "json_array": (write_json_array, "data.json", "json"),
    "json_object": (write_json_object, "data.json", "json"),
    "csv": (write_csv, "data.csv", "csv"),
    "parquet": (write_parquet, "data.parquet", "parquet"),
    "parquet_parts": (write_parquet_parts, "parts", "parquet"),
    "hf_disk": (write_hf_disk, "hf_ds", "hf_disk"),
}


def run(tmp_path, locator: str, eval_locator: str = "", **opts):
    options = IngestOptions(**{"shape": "prompt_completion", **opts})
    return ingest(locator, eval_locator, options, tmp_path / "out.parquet", tmp_path / "rejects.jsonl")


def canonical(tmp_path) -> list[tuple]:
    return [(r["id"], r["group"], r["prompt"], r["completion"]) for r in read_rows(tmp_path / "out.parquet")]


def rejects(tmp_path) -> list[dict]:
    lines = (tmp_path / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def assert_all_read(tmp_path, result, fmt: str, source: str = "train") -> None:
    stats = result.sources[source]
    assert (stats.format, stats.rows_in, stats.accepted, dict(stats.rejected)) == (fmt, 5, 5, {})
    assert len(stats.sha256) == 64
    assert canonical(tmp_path) == CANONICAL
    assert {r["source"] for r in read_rows(tmp_path / "out.parquet")} == {source}
    assert rejects(tmp_path) == []


# --- parse_locator ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("jsonl:data/x.txt", Locator("jsonl:data/x.txt", "jsonl", "data/x.txt")),
        ("json:/abs/x.dat", Locator("json:/abs/x.dat", "json", "/abs/x.dat")),
        ("csv:x", Locator("csv:x", "csv", "x")),
        ("parquet:some/folder", Locator("parquet:some/folder", "parquet", "some/folder")),
        ("jsonl:gs://b/o.txt", Locator("jsonl:gs://b/o.txt", "jsonl", "gs://b/o.txt")),
        ("data/train.jsonl", Locator("data/train.jsonl", "", "data/train.jsonl")),
        ("/abs/dir", Locator("/abs/dir", "", "/abs/dir")),
        ("  x.csv \n", Locator("x.csv", "", "x.csv")),
        ("gs://b/o.jsonl", Locator("gs://b/o.jsonl", "", "gs://b/o.jsonl")),
        ("gs://b/parts/", Locator("gs://b/parts/", "", "gs://b/parts/")),
        ("hf:org/name:train", Locator("hf:org/name:train", "hf_hub", "org/name", split="train")),
        (
            "hf:org/name:cfg:validation",
            Locator("hf:org/name:cfg:validation", "hf_hub", "org/name", config="cfg", split="validation"),
        ),
    ],
)
def test_parse_locator(text, expected):
    assert parse_locator(text) == expected


@pytest.mark.parametrize("text", ["hf:only", "hf:", "hf:name:", "hf::split", "hf:a:b:c:d"])
def test_parse_locator_bad_hub_locator(text):
    with pytest.raises(LocatorError, match=r"hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT"):
        parse_locator(text)


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_parse_locator_empty(text):
    with pytest.raises(LocatorError, match="empty data locator"):
        parse_locator(text)


def test_hub_locator_is_not_materialized(tmp_path):
    loc = parse_locator("hf:org/name:cfg:train")
    assert materialize(loc, tmp_path) == (loc, None)  # streamed later: no download, no local path
    assert list(tmp_path.iterdir()) == []


# --- every format gives the same canonical rows ----------------------------------------------------


@pytest.mark.parametrize("name", list(WRITERS))
def test_format_from_extension_or_folder(tmp_path, name):
    writer, filename, fmt = WRITERS[name]
    path = writer(tmp_path / filename)
    assert materialize(parse_locator(str(path)), tmp_path)[0].format == fmt
    assert_all_read(tmp_path, run(tmp_path, str(path)), fmt)


@pytest.mark.parametrize("name", [n for n in WRITERS if n != "hf_disk"])
def test_format_from_prefix(tmp_path, name):
    writer, filename, fmt = WRITERS[name]
    # a file under an extension that says nothing (or a folder): only the prefix names the format
    path = writer(tmp_path / ("rows.dat" if "." in filename else "rows_dir"))
    assert_all_read(tmp_path, run(tmp_path, f"{fmt}:{path}"), fmt)


@pytest.mark.parametrize("name", list(WRITERS))
def test_iter_records_and_sample_rows(tmp_path, name):
    writer, filename, _ = WRITERS[name]
    loc, path = materialize(parse_locator(str(writer(tmp_path / filename))), tmp_path)
    records = list(iter_records(loc, path, max_row_bytes=1 << 20))
    assert all(isinstance(r, Record) and r.reason == "" for r in records)
    assert [r.row for r in records] == [1, 2, 3, 4, 5]
    assert [{k: r.value[k] for k in ROWS[0]} for r in records] == ROWS
    assert sample_rows(loc, path, n=2) == [r.value for r in records[:2]]


@pytest.mark.parametrize("name", ["jsonl", "csv", "parquet_parts", "hf_disk"])
def test_auto_shape_reads_every_format(tmp_path, name):
    writer, filename, fmt = WRITERS[name]
    result = run(tmp_path, str(writer(tmp_path / filename)), shape="auto")
    assert result.shape.shape == "prompt_completion"
    assert_all_read(tmp_path, result, fmt)


def test_explicit_eval_in_another_format(tmp_path):
    train = write_hf_disk(tmp_path / "train_ds", ROWS[:3])
    held = write_csv(tmp_path / "held.csv")  # all five rows; ids r1-r3 repeat in train
    result = run(tmp_path, str(train), str(held))
    out = read_rows(tmp_path / "out.parquet")
    assert [(r["id"], r["source"]) for r in out] == [(r["id"], "eval") for r in ROWS]
    assert result.sources["train"].rejected == Counter({"DUPLICATE_ID": 3})
    assert (result.sources["eval"].format, result.sources["train"].format) == ("csv", "hf_disk")


def test_unknown_extension_names_the_fix(tmp_path):
    path = write_jsonl(tmp_path / "data.txt")
    with pytest.raises(LocatorError, match=r"extension '\.txt'.*Fix: prefix the locator with jsonl:"):
        run(tmp_path, str(path))
    noext = write_jsonl(tmp_path / "data")
    with pytest.raises(LocatorError, match=r"extension ''.*jsonl:, json:, csv: or parquet:"):
        run(tmp_path, str(noext))


def test_folder_without_data_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(LocatorError, match="neither parquet files nor an HF save_to_disk dataset"):
        run(tmp_path, str(tmp_path / "empty"))


def test_dataset_dict_names_its_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[:1])})
    ds.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(LocatorError, match=r"DatasetDict with splits \['train', 'test'\].*dd/train"):
        run(tmp_path, str(tmp_path / "dd"))
    assert_all_read(tmp_path, run(tmp_path, str(tmp_path / "dd" / "train")), "hf_disk")


def test_missing_local_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        materialize(parse_locator(f"parquet:{tmp_path / 'nope'}"), tmp_path)


def test_bad_json_document_is_a_locator_error(tmp_path):
    (tmp_path / "two.json").write_text(json.dumps({"a": ROWS, "b": ROWS}))
    with pytest.raises(LocatorError, match="one key holding it"):
        run(tmp_path, str(tmp_path / "two.json"))
    (tmp_path / "lines.json").write_text(write_jsonl(tmp_path / "x.jsonl").read_text())
    with pytest.raises(LocatorError, match="for one object per line use jsonl:"):
        run(tmp_path, str(tmp_path / "lines.json"))


# --- CSV specifics ---------------------------------------------------------------------------------


def test_csv_bad_rows_are_accounted(tmp_path):
    lines = [
        b"id,prompt,completion",
        b"c1,hello,world",
        b"c2,only two",  # a missing cell
        b"c3,a,b,surplus",  # an extra cell
        b"c4,caf\xe9 latin-1,x",  # not UTF-8
        b'c5,"multi\nline, quoted",ok',
        b"",  # a blank line is not a row
        b"c6,last,row",
    ]
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    result = run(tmp_path, str(path))
    assert result.rejected == Counter({"MISSING_FIELD": 1, "WRONG_TYPE": 1, "NOT_UTF8": 1})
    assert (result.rows_in, result.accepted) == (6, 3)
    assert result.rows_in == result.accepted + sum(result.rejected.values())
    assert [r["id"] for r in read_rows(tmp_path / "out.parquet")] == ["c1", "c5", "c6"]
    assert read_rows(tmp_path / "out.parquet")[1]["prompt"] == "multi\nline, quoted"
    by_row = {r["row"]: r for r in rejects(tmp_path)}
    assert {n: r["code"] for n, r in by_row.items()} == {2: "MISSING_FIELD", 3: "WRONG_TYPE", 4: "NOT_UTF8"}
    assert "missing cells" in by_row[2]["detail"] and "extra cells" in by_row[3]["detail"]
    assert by_row[4]["raw"].startswith("c4,caf") and "latin-1" in by_row[4]["raw"]


def test_csv_row_too_large(tmp_path):
    path = tmp_path / "big.csv"
    write_csv(path)
    with open(path, "a", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerow(["r6", "g", "x" * 5000, "y"])
    result = run(tmp_path, str(path), max_row_bytes=1000)
    assert result.rejected == Counter({"ROW_TOO_LARGE": 1})
    assert [r["row"] for r in rejects(tmp_path)] == [6]
    assert canonical(tmp_path) == CANONICAL


def test_csv_with_byte_order_mark(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM; read as plain utf-8 the first column would become
    '\\ufeffid', so every row would be MISSING_FIELD. Hence ``_csv`` reads utf-8-sig:
    ``open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")``."""
    path = write_csv(tmp_path / "bom.csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert_all_read(tmp_path, run(tmp_path, str(path)), "csv")


# --- ROW_TOO_LARGE for arrow-backed formats -------------------------------------------------------


@pytest.mark.parametrize("name", ["parquet", "parquet_parts", "hf_disk"])
def test_arrow_rows_too_large(tmp_path, name):
    writer, filename, fmt = WRITERS[name]
    big = {"id": "big", "group": "g", "prompt": "é" * 3000, "completion": "x"}  # 6,000 bytes as UTF-8
    rows = [*ROWS[:2], big, *ROWS[2:]]
    result = run(tmp_path, str(writer(tmp_path / filename, rows)), max_row_bytes=4000)
    assert result.sources["train"].format == fmt
    assert result.rejected == Counter({"ROW_TOO_LARGE": 1})
    assert (result.rows_in, result.accepted) == (6, 5)
    [reject] = rejects(tmp_path)
    assert (reject["row"], reject["code"]) == (3, "ROW_TOO_LARGE")
    assert "> 4,000" in reject["detail"]
    assert canonical(tmp_path) == CANONICAL


# --- gs:// through a real storage emulator (the gcs_emulator fixture is in tests/conftest.py) ----------


@pytest.fixture()
def bucket(gcs_emulator, monkeypatch):
    """A fresh bucket; sources.py's own ``storage.Client()`` reaches the emulator through the env."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    return client.create_bucket(f"slmforge-{uuid.uuid4().hex[:12]}")


def upload(bucket, local: Path, name: str) -> None:
    """A file as one object, or a folder as one object per file under ``name/``."""
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    for f in files:
        key = name if local.is_file() else f"{name}/{f.relative_to(local).as_posix()}"
        bucket.blob(key).upload_from_filename(str(f))


def test_gcs_jsonl_object(tmp_path, bucket):
    upload(bucket, write_jsonl(tmp_path / "local.jsonl"), "data.jsonl")
    upload(bucket, write_jsonl(tmp_path / "local.txt"), "raw/data.txt")
    assert_all_read(tmp_path, run(tmp_path, f"gs://{bucket.name}/data.jsonl"), "jsonl")
    assert_all_read(tmp_path, run(tmp_path, f"jsonl:gs://{bucket.name}/raw/data.txt"), "jsonl")


@pytest.mark.parametrize("suffix", ["/", ""])
def test_gcs_parquet_parts_folder(tmp_path, bucket, suffix):
    upload(bucket, write_parquet_parts(tmp_path / "parts"), "exports/parts")
    result = run(tmp_path, f"gs://{bucket.name}/exports/parts{suffix}")
    assert_all_read(tmp_path, result, "parquet")
    # the folder's hash covers the downloaded parts, so it matches the same folder read locally
    assert result.sources["train"].sha256 == run(tmp_path, str(tmp_path / "parts")).sources["train"].sha256


def test_gcs_hf_disk_folder_and_csv(tmp_path, bucket):
    upload(bucket, write_hf_disk(tmp_path / "hf_ds"), "ds/train")
    upload(bucket, write_csv(tmp_path / "held.csv"), "ds/held.csv")
    result = run(tmp_path, f"gs://{bucket.name}/ds/train/", f"gs://{bucket.name}/ds/held.csv")
    assert (result.sources["train"].format, result.sources["eval"].format) == ("hf_disk", "csv")
    assert canonical(tmp_path) == CANONICAL  # the eval copies win; train's are duplicate ids
    assert result.sources["train"].rejected == Counter({"DUPLICATE_ID": 5})


def test_gcs_missing_object(tmp_path, bucket):
    upload(bucket, write_jsonl(tmp_path / "local.jsonl"), "data.jsonl")
    for missing in ("missing.jsonl", "nothing/here/", "data.jsonl.bak"):
        with pytest.raises(FileNotFoundError, match="no such object and no objects under this prefix"):
            run(tmp_path, f"gs://{bucket.name}/{missing}")


@pytest.mark.parametrize("shape", ["prompt_completion", "auto"])
def test_gcs_train_and_eval_folders_with_the_same_name_stay_apart(tmp_path, bucket, shape):
    """Both prefixes end in ``data/``: each locator gets its own download folder, or the second
    download would find the first one's part files and read them too."""
    upload(bucket, write_parquet_parts(tmp_path / "train_parts", ROWS), "train/data")
    (tmp_path / "eval_parts").mkdir()
    held = {"id": "e1", "group": "e", "prompt": "held out", "completion": "x"}
    write_parquet(tmp_path / "eval_parts" / "eval-00000.parquet", [held])
    upload(bucket, tmp_path / "eval_parts", "eval/data")
    result = run(tmp_path, f"gs://{bucket.name}/train/data/", f"gs://{bucket.name}/eval/data/", shape=shape)
    assert {k: (s.rows_in, s.accepted) for k, s in result.sources.items()} == {
        "eval": (1, 1),
        "train": (5, 5),
    }
    out = read_rows(tmp_path / "out.parquet")
    assert [(r["id"], r["source"]) for r in out] == [("e1", "eval")] + [(r["id"], "train") for r in ROWS]


def test_gcs_missing_bucket(tmp_path, bucket):
    """A missing bucket is a FileNotFoundError like every other missing locator (not google's NotFound)."""
    with pytest.raises(FileNotFoundError):
        run(tmp_path, f"gs://{bucket.name}-missing/data.jsonl")


def test_gcs_model_folder_is_downloaded_once(tmp_path, bucket, tiny_model):
    """model.base gs://...: the same download code as data locators, cached by the folder's config.json."""
    from components.common.models import download_gcs_dir

    upload(bucket, Path(tiny_model), "models/tiny")
    cache = tmp_path / "cache"
    local = download_gcs_dir(f"gs://{bucket.name}/models/tiny/", cache)
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in Path(tiny_model).iterdir())
    (local / "marker").write_text("cached")
    assert download_gcs_dir(f"gs://{bucket.name}/models/tiny", cache) == local and (local / "marker").exists()
    with pytest.raises(FileNotFoundError, match=r"model\.base must be a folder of a checkpoint"):
        download_gcs_dir(f"gs://{bucket.name}/models/none/", cache)


def test_a_device_or_pipe_is_refused_not_read_forever(tmp_path):
    import os

    from components.ingest.sources import LocatorError, materialize, parse_locator

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    for loc in ("jsonl:/dev/zero", str(fifo)):
        with pytest.raises(LocatorError, match="not a regular file or folder"):
            materialize(parse_locator(loc), tmp_path)


def test_a_line_without_end_is_read_in_bounded_pieces(tmp_path):
    """A 5 MB file with no newline (or /dev/zero copied to disk) is one ROW_TOO_LARGE row, read at most
    max_row_bytes + 1 bytes at a time, and the rows after a long line are still read."""
    from components.ingest.sources import _jsonl

    path = tmp_path / "big.jsonl"
    path.write_bytes(b"x" * 3_000_000 + b"\n" + b'{"prompt": "p", "completion": "c"}\n' + b"\0" * 2_000_000)
    records = list(_jsonl(path, max_row_bytes=1000))
    assert [(r.row, r.reason) for r in records] == [(1, "ROW_TOO_LARGE"), (2, ""), (3, "ROW_TOO_LARGE")]
    assert records[0].detail == "3,000,001 bytes > 1,000" and records[2].detail.startswith("2,000,000 bytes")
