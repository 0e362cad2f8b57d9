"""One reason-code table for every stage; the audit stream is append-only across stages."""

from __future__ import annotations

import pytest

from components.common.events import REASONS, ROW_REASONS, event, read_events, reasons_markdown, write_events

REPO_DOC = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "reason-codes.md"


def test_the_documented_table_is_the_code_table():
    assert REPO_DOC.read_text(encoding="utf-8") == reasons_markdown(), (
        "docs/reason-codes.md is stale: python -m components.common.events > docs/reason-codes.md"
    )


def test_codes_are_upper_snake_and_documented():
    for code, r in REASONS.items():
        assert code.replace("_", "").isupper() and r.meaning and r.fix, code
        assert r.severity in ("info", "warning", "error")
    assert "DUPLICATE" in ROW_REASONS and "SPLIT_DONE" not in ROW_REASONS


def test_unknown_code_is_a_bug():
    with pytest.raises(KeyError, match="unknown reason code 'NOT_A_CODE'"):
        event("ingest", "NOT_A_CODE")


def test_stream_appends_downstream(tmp_path):
    write_events(tmp_path / "a.jsonl", None, [event("ingest", "ROWS_READ", 10)])
    write_events(tmp_path / "b.jsonl", tmp_path / "a.jsonl", [event("clean", "DUPLICATE", 2, "e.g. r1")])
    stream = read_events(tmp_path / "b.jsonl")
    assert [(e["stage"], e["code"], e["count"]) for e in stream] == [
        ("ingest", "ROWS_READ", 10),
        ("clean", "DUPLICATE", 2),
    ]
    assert stream[1]["severity"] == "error" and stream[0]["time"].endswith("Z")
