"""Ingest accounts for every row: accepted, or rejected with its row number and a stable reason code.

The bad-input corpus below holds every ingest reason code at least once, a truncated last line and a
10 MB line; ingest must not crash and rows in must equal accepted + rejected, reason by reason.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from components.common.events import REASONS, DataError, close_stage, read_events
from components.common.tables import read_rows
from components.ingest.core import IngestOptions, ingest

SCHEMA = {"type": "object", "properties": {"intent": {"enum": ["a", "b"]}}, "required": ["intent"]}
GOOD = {"prompt": "hello", "completion": '{"intent": "a"}'}


def chat(*turns, **extra):
    return {"messages": [{"role": r, "content": c} for r, c in turns], **extra}


# (line bytes, expected reason code or None for accepted)
PC_CORPUS: list[tuple[bytes, str | None]] = [
    (json.dumps({"id": "1", **GOOD}).encode(), None),
    (b"{not json", "NOT_JSON"),
    (b'{"id": "x", "prompt": "caf\xe9", "completion": "{}"}', "NOT_UTF8"),
    (json.dumps([1, 2]).encode(), "NOT_OBJECT"),
    (json.dumps({"id": "2", "prompt": "no answer"}).encode(), "MISSING_FIELD"),
    (json.dumps({"id": "3", "prompt": 7, "completion": '{"intent": "a"}'}).encode(), "WRONG_TYPE"),
    (json.dumps({"id": "4", "prompt": "  ", "completion": '{"intent": "a"}'}).encode(), "EMPTY_FIELD"),
    (json.dumps({"id": "1", **GOOD}).encode(), "DUPLICATE_ID"),
    (json.dumps({"id": "5", "prompt": "p", "completion": "not json"}).encode(), "TARGET_NOT_JSON"),
    (json.dumps({"id": "6", "prompt": "p", "completion": '{"intent": "z"}'}).encode(), "TARGET_SCHEMA"),
    (json.dumps({"id": "7", "prompt": "x" * (10 << 20), "completion": "{}"}).encode(), "ROW_TOO_LARGE"),
    (b"", None),  # a blank line is not a row
    (json.dumps({"prompt": "no id", **{"completion": '{"intent": "b"}'}}).encode(), None),
]

CHAT_CORPUS: list[tuple[dict, str | None]] = [
    (chat(("system", "be brief"), ("user", "hi"), ("assistant", "hello"), id="c1"), None),
    (chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"), id="c2"), None),
    (chat(("user", "a"), ("tool", "b"), ("assistant", "c")), "BAD_ROLE"),
    (chat(("user", "a"), ("user", "b"), ("assistant", "c")), "BAD_ROLE_ORDER"),
    (chat(("user", "a")), "BAD_ROLE_ORDER"),
    (chat(("assistant", "a"), ("user", "b")), "BAD_ROLE_ORDER"),
    (chat(("user", " "), ("assistant", "c")), "EMPTY_TURN"),
    ({"messages": "hi"}, "WRONG_TYPE"),
    ({"messages": [{"role": "user"}]}, "MISSING_FIELD"),
]


def write_lines(path, lines: list[bytes], final_newline: bool = True) -> str:
    path.write_bytes(b"\n".join(lines) + (b"\n" if final_newline else b""))
    return str(path)


def run(tmp_path, locator, eval_locator="", **opts):
    options = IngestOptions(**{"shape": "prompt_completion", **opts})
    return ingest(locator, eval_locator, options, tmp_path / "out.parquet", tmp_path / "rejects.jsonl")


def rejects(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]


def test_bad_input_corpus_exact_accounting(tmp_path):
    lines = [line for line, _ in PC_CORPUS] + [b'{"id": "9", "prompt": "cut off", "compl']
    src = write_lines(tmp_path / "bad.jsonl", lines, final_newline=False)
    result = run(tmp_path, src, output_schema=SCHEMA, max_row_bytes=1 << 20)
    expected = Counter(code for _, code in PC_CORPUS if code) + Counter({"TRUNCATED": 1})
    assert result.rejected == expected
    assert result.rows_in == len(PC_CORPUS) - 1 + 1  # minus the blank line, plus the truncated one
    assert result.accepted + sum(result.rejected.values()) == result.rows_in
    # every reject names its row (line number) and code; the raw preview is bounded
    by_line = {r["row"]: r["code"] for r in rejects(tmp_path)}
    for line_no, (_, code) in enumerate(PC_CORPUS, start=1):
        assert by_line.get(line_no) == code
    assert by_line[len(lines)] == "TRUNCATED"
    assert all(len(r["raw"]) <= 200 for r in rejects(tmp_path))
    rows = read_rows(tmp_path / "out.parquet")
    assert [r["id"] for r in rows] == ["1", f"train:{len(PC_CORPUS)}"]
    assert rows[0]["group"] == "1" and rows[0]["source"] == "train" and rows[0]["history"] == "[]"


def test_chat_corpus(tmp_path):
    src = write_lines(tmp_path / "chat.jsonl", [json.dumps(v).encode() for v, _ in CHAT_CORPUS])
    result = run(tmp_path, src, shape="messages")
    assert result.rejected == Counter(code for _, code in CHAT_CORPUS if code)
    rows = read_rows(tmp_path / "out.parquet")
    assert rows[0]["history"] == json.dumps([{"role": "system", "content": "be brief"}])
    assert (rows[0]["prompt"], rows[0]["completion"]) == ("hi", "hello")
    assert json.loads(rows[1]["history"]) == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]
    assert (rows[1]["prompt"], rows[1]["completion"]) == ("c", "d")


def test_sharegpt_and_alpaca(tmp_path):
    share = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    bad = {"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}
    src = write_lines(tmp_path / "s.jsonl", [json.dumps(share).encode(), json.dumps(bad).encode()])
    result = run(tmp_path, src, shape="sharegpt")
    assert result.rejected == Counter({"BAD_ROLE": 1})
    assert read_rows(tmp_path / "out.parquet")[0]["prompt"] == "q"
    alpaca = [
        {"instruction": "Translate", "input": "chat", "output": "cat"},
        {"instruction": "Hi", "output": "Hello"},
    ]
    src = write_lines(tmp_path / "a.jsonl", [json.dumps(a).encode() for a in alpaca])
    run(tmp_path, src, shape="alpaca")
    assert [r["prompt"] for r in read_rows(tmp_path / "out.parquet")] == ["Translate\n\nchat", "Hi"]


def test_every_ingest_reason_is_covered_by_a_test():
    covered = {c for _, c in PC_CORPUS + CHAT_CORPUS if c} | {"TRUNCATED", "LABEL_UNKNOWN"}  # labels: below
    assert covered == {code for code, r in REASONS.items() if r.stage == "ingest" and r.severity == "error"}


def test_explicit_eval_is_read_first_and_tagged(tmp_path):
    train = write_lines(
        tmp_path / "t.jsonl", [json.dumps({"prompt": f"t{i}", "completion": "x"}).encode() for i in range(3)]
    )
    held = write_lines(tmp_path / "e.jsonl", [json.dumps({"prompt": "e0", "completion": "x"}).encode()])
    result = run(tmp_path, train, held)
    rows = read_rows(tmp_path / "out.parquet")
    assert [(r["id"], r["source"]) for r in rows] == [
        ("eval:1", "eval"),
        ("train:1", "train"),
        ("train:2", "train"),
        ("train:3", "train"),
    ]
    assert {k: s.rows_in for k, s in result.sources.items()} == {"eval": 1, "train": 3}


def test_reject_rate_fails_the_stage_after_writing_everything(tmp_path):
    lines = [json.dumps({"prompt": "p", "completion": "c"}).encode()] * 8 + [b"{bad"] * 2
    result = run(tmp_path, write_lines(tmp_path / "d.jsonl", lines))
    events_path = tmp_path / "events.jsonl"
    with pytest.raises(
        DataError, match=r"2 of 10 rows rejected \(20.00% > data.max_reject_rate 1.00%\).*NOT_JSON 2"
    ):
        close_stage(
            events_path,
            None,
            result.events,
            stage="ingest",
            rows_in=result.rows_in,
            rejected=dict(result.rejected),
            max_reject_rate=0.01,
            samples=result.samples,
        )
    codes = [e["code"] for e in read_events(events_path)]
    assert codes[-1] == "REJECT_RATE_EXCEEDED" and "NOT_JSON" in codes
    assert len(rejects(tmp_path)) == 2  # the rejects file is complete


def test_all_rows_rejected_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no usable rows"):
        run(tmp_path, write_lines(tmp_path / "d.jsonl", [b"{bad"]))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(tmp_path, str(tmp_path / "none.jsonl"))


@pytest.mark.parametrize(
    ("schema", "completion"),
    [
        (
            {"$schema": "http://json-schema.org/draft-07/schema#", "type": "string", "format": "email"},
            '"not-an-email"',
        ),
        ({"type": "string", "pattern": "^\\d+$"}, '"١٢٣"'),  # Arabic-Indic digits: \d in Python's re
        ({"type": "number"}, "NaN"),  # Python's json reads it; orjson does not
    ],
)
def test_targets_are_judged_like_evaluation_judges_them(tmp_path, schema, completion):
    """Ingest accepts exactly what evaluation's parser and validator (json + jsonschema) accept."""
    from components.common.task import parse_json, schema_validator

    value, error = parse_json(completion)
    assert error is None and schema_validator(schema).is_valid(value)
    src = write_lines(tmp_path / "d.jsonl", [json.dumps({"prompt": "p", "completion": completion}).encode()])
    assert run(tmp_path, src, output_schema=schema).rejected == Counter()


def test_structured_targets_are_written_in_the_schema_key_order(tmp_path):
    """A target whose keys follow another order, or with spaces, is trained as constrained decoding will
    emit it: the schema's declared order, compact (the schema order here is not alphabetical)."""
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "type": {"type": "string"}, "date": {"type": "string"}},
    }
    rows = [
        {"prompt": "a", "completion": '{"date": "mon", "name": "Ann", "type": "call"}'},
        {"prompt": "b", "completion": '{"name":"Bo","type":"meeting","date":"fri"}'},
    ]
    src = write_lines(tmp_path / "d.jsonl", [json.dumps(r).encode() for r in rows])
    assert run(tmp_path, src, output_schema=schema).rejected == Counter()
    got = [r["completion"] for r in read_rows(tmp_path / "out.parquet")]
    assert got == ['{"name":"Ann","type":"call","date":"mon"}', '{"name":"Bo","type":"meeting","date":"fri"}']


@pytest.mark.parametrize(
    ("normalize", "accepted", "unknown"),
    [
        ((), ["billing", "Technical"], ["Billing", " billing ", "BILLING", "refund"]),
        (("strip",), ["billing", "billing", "Technical"], ["Billing", "BILLING", "refund"]),
        (("strip", "lower"), ["billing", "billing", "billing", "billing", "Technical"], ["refund"]),
    ],
)
def test_classification_labels_are_checked_at_ingest(tmp_path, normalize, accepted, unknown):
    """Case variants, padding and labels outside task.labels are LABEL_UNKNOWN at ingest (seconds into a
    run, not after training); data.labels.normalize maps spelling variants to the declared label."""
    targets = ["billing", "Billing", " billing ", "BILLING", "Technical", "refund"]
    lines = [
        json.dumps({"id": str(i), "prompt": "p", "completion": t}).encode() for i, t in enumerate(targets)
    ]
    src = write_lines(tmp_path / "d.jsonl", lines)
    result = run(tmp_path, src, labels=["billing", "Technical"], label_normalize=normalize)
    assert sorted(r["completion"] for r in read_rows(tmp_path / "out.parquet")) == sorted(accepted)
    assert result.rejected == Counter({"LABEL_UNKNOWN": len(unknown)})
    details = [r["detail"] for r in rejects(tmp_path)]
    assert all("is not one of 'billing', 'Technical'" in d for d in details), details


def test_chat_fixes_repair_the_ends_of_real_conversations_and_count_them(tmp_path):
    """A leading assistant greeting and a trailing unanswered user turn are BAD_ROLE_ORDER unless
    data.chat.fix repairs them; each repair is counted (result.fixed and a CHAT_FIXED event)."""
    rows = [
        chat(("assistant", "Hi! How can I help?"), ("user", "book a table"), ("assistant", "done"), id="a"),
        chat(("user", "book a table"), ("assistant", "done"), ("user", "thanks!"), id="b"),
        chat(
            ("system", "s"),
            ("assistant", "hello"),
            ("user", "q"),
            ("assistant", "a"),
            ("user", "bye"),
            id="c",
        ),
        chat(("user", "q"), ("assistant", "a"), id="d"),
    ]
    src = write_lines(tmp_path / "c.jsonl", [json.dumps(r).encode() for r in rows])
    plain = run(tmp_path, src, shape="messages")
    assert plain.rejected == Counter({"BAD_ROLE_ORDER": 3}) and plain.accepted == 1
    fixes = ("drop_leading_assistant", "drop_trailing_user")
    fixed = run(tmp_path, src, shape="messages", chat_fixes=fixes)
    assert fixed.accepted == 4 and not fixed.rejected
    assert fixed.fixed == Counter({"drop_leading_assistant": 2, "drop_trailing_user": 2})
    out = {r["id"]: r for r in read_rows(tmp_path / "out.parquet")}
    assert (out["a"]["prompt"], out["a"]["completion"], out["a"]["history"]) == ("book a table", "done", "[]")
    assert json.loads(out["c"]["history"]) == [{"role": "system", "content": "s"}]
    assert {e["details"]["fix"]: e["count"] for e in fixed.events if e["code"] == "CHAT_FIXED"} == {
        "drop_leading_assistant": 2,
        "drop_trailing_user": 2,
    }
