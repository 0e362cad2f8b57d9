"""Ingest accounts for every row: accepted, or rejected with its line number and a reason code."""

from __future__ import annotations

import json

import pytest

from components.common.tables import read_rows
from components.ingest.core import FieldMap, ingest, map_rows

FIELDS = FieldMap(prompt="q", completion="a", group="fam", id="uid")


def test_rows_in_equals_accepted_plus_rejected():
    lines = [
        json.dumps({"uid": "1", "fam": "f1", "q": "hello", "a": "[]"}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"uid": "2", "q": "no answer"}),
        json.dumps({"uid": "3", "q": 7, "a": "[]"}),
        json.dumps({"uid": "4", "q": "  ", "a": "[]"}),
        json.dumps({"uid": "1", "q": "dup id", "a": "[]"}),
        "",
        json.dumps({"q": "no id", "a": "[]"}),
    ]
    rows, result = map_rows(lines, FIELDS)
    assert result.rows_in == 8  # the blank line is not a row
    assert result.accepted + len(result.rejected) == result.rows_in
    assert [(n, code) for n, code, _ in result.rejected] == [
        (2, "NOT_JSON"),
        (3, "NOT_OBJECT"),
        (4, "MISSING_FIELD"),
        (5, "WRONG_TYPE"),
        (6, "EMPTY_FIELD"),
        (7, "DUPLICATE_ID"),
    ]
    assert rows[0] == {"id": "1", "group": "f1", "prompt": "hello", "completion": "[]"}
    assert rows[1] == {"id": "row-9", "group": "row-9", "prompt": "no id", "completion": "[]"}


def test_ingest_writes_canonical_table(tmp_path, travel_config):
    out = tmp_path / "t.parquet"
    result = ingest(travel_config.data.train, FieldMap("prompt", "completion", "group", "id"), out)
    rows = read_rows(out)
    assert result.accepted == len(rows) == result.rows_in
    assert set(rows[0]) == {"id", "group", "prompt", "completion"}


def test_ingest_fails_naming_the_line(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"q": "x", "a": "[]"}) + "\n" + json.dumps({"q": "y"}) + "\n")
    with pytest.raises(ValueError, match=r"1 of 2 rows rejected — line 2: MISSING_FIELD \(no 'a' field\)"):
        ingest(str(src), FieldMap("q", "a"), tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        ingest(str(tmp_path / "none.jsonl"), FieldMap(), tmp_path / "o.parquet")
