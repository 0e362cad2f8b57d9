"""Clean: PII redaction/blocking, token-length filter with the real tokenizer, exact and near duplicates,
train/eval leaks — and rows in = kept + removed, reason by reason."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from components.clean.core import CleanOptions, clean, report_markdown
from components.common.events import REASONS
from components.common.tables import read_rows, write_rows

# ~150 characters: one changed character leaves a character-5-gram Jaccard of about 0.94
SENTENCE = (
    "Please book a flight from Dublin to Lisbon next Friday morning for two adults, window seats if "
    "possible, and a hotel near the old town for three nights"
)


def row(i, prompt, completion="[]", source="train", group=None, history="[]"):
    return {
        "id": f"{source}-{i}",
        "group": group or f"g{i}",
        "source": source,
        "history": history,
        "prompt": prompt,
        "completion": completion,
    }


def run(tmp_path, rows, **opts):
    write_rows(rows, tmp_path / "in.parquet")
    options = CleanOptions(**{"near_dup_threshold": 0.9, **opts})
    result = clean(tmp_path / "in.parquet", tmp_path / "out.parquet", tmp_path / "rejects.jsonl", options)
    kept = read_rows(tmp_path / "out.parquet")
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert (
        result.rows_in == len(rows) == result.kept + sum(result.rejected.values()) == len(kept) + len(rejects)
    )
    assert Counter(r["code"] for r in rejects) == result.rejected
    return result, kept, {r["row"]: r for r in rejects}


def test_exact_and_near_duplicates_keep_the_first(tmp_path):
    rows = [
        row(0, SENTENCE),
        row(1, SENTENCE.upper() + "  "),  # exact after normalisation (case, whitespace)
        row(2, SENTENCE.replace("Friday", "Fridey")),  # one character changed
        row(3, "Cancel my hotel booking in Rome for tomorrow night please, thanks a lot"),
    ]
    result, kept, rejects = run(tmp_path, rows)
    assert [r["id"] for r in kept] == ["train-0", "train-3"]
    assert rejects["train-1"]["code"] == "DUPLICATE" and rejects["train-1"]["detail"] == "same as train-0"
    assert rejects["train-2"]["code"] == "NEAR_DUPLICATE"
    assert rejects["train-2"]["detail"] == "near-duplicate cluster of train-0"
    assert "candidate pairs from MinHash LSH" in report_markdown(result, CleanOptions())
    exact_only, kept, _ = run(tmp_path, rows, near_dup_threshold=-1)
    assert exact_only.rejected == Counter({"DUPLICATE": 1}) and len(kept) == 3


def test_eval_rows_win_over_training_copies(tmp_path):
    rows = [
        row(0, SENTENCE, source="eval", group="e"),
        row(
            1,
            "A completely different request about a car rental in Porto on Monday",
            source="eval",
            group="e2",
        ),
        row(2, SENTENCE),  # exact copy of an eval row
        row(3, SENTENCE + "!"),  # near copy
        row(4, "Some training row in the eval row's group, otherwise unrelated to it", group="e"),
        row(5, "A training row that is fine and unlike any other row in this small test"),
    ]
    _result, kept, rejects = run(tmp_path, rows)
    assert [r["id"] for r in kept] == ["eval-0", "eval-1", "train-5"]
    assert {rejects[k]["code"] for k in ("train-2", "train-3", "train-4")} == {"EVAL_LEAK"}
    assert "group 'e'" in rejects["train-4"]["detail"]


def test_pii_redact_and_block(tmp_path):
    rows = [
        row(0, "Mail me at jane.doe@example.com or call +44 20 7946 0958"),
        row(1, "Card 4111 1111 1111 1111 for the hotel", completion='["paid"]'),
        row(2, "No personal data in this one at all, just a table for 2 on 2026-05-03"),
        row(
            3,
            "history",
            history=json.dumps(
                [{"role": "user", "content": "my ip is 192.168.1.20"}, {"role": "assistant", "content": "ok"}]
            ),
        ),
    ]
    result, kept, _ = run(tmp_path, rows)
    assert kept[0]["prompt"] == "Mail me at <EMAIL> or call <PHONE>"
    assert kept[1]["prompt"] == "Card <CREDIT_CARD> for the hotel"
    assert kept[2]["prompt"] == rows[2]["prompt"]
    assert json.loads(kept[3]["history"])[0]["content"] == "my ip is <IP_ADDRESS>"
    assert (
        result.pii == Counter({"EMAIL": 1, "PHONE": 1, "CREDIT_CARD": 1, "IP_ADDRESS": 1})
        and result.pii_rows == 3
    )
    assert result.events[0]["code"] == "PII_REDACTED"
    blocked, kept, rejects = run(tmp_path, rows, pii="block")
    assert blocked.rejected == Counter({"PII_BLOCKED": 3}) and [r["id"] for r in kept] == ["train-2"]
    assert rejects["train-0"]["detail"] == "EMAIL x1, PHONE x1"
    _, kept, _ = run(tmp_path, rows, pii="off")
    assert kept[0]["prompt"] == rows[0]["prompt"]


def test_token_length_filter_uses_the_real_tokenizer_and_template(tmp_path, tiny_model):
    from components.common.models import load_tokenizer
    from components.common.task import conversation

    tok = load_tokenizer(str(tiny_model))
    short, long = row(0, "Book a table in Rome"), row(1, " ".join(["Book a table in Rome"] * 20))
    n_short = len(
        tok.apply_chat_template(conversation("sys", short["prompt"], "[]"), tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    result, kept, rejects = run(
        tmp_path, [short, long], max_tokens=n_short, tokenizer="tiny://travel", system_prompt="sys"
    )
    assert [r["id"] for r in kept] == ["train-0"]  # exactly at the limit is kept
    assert rejects["train-1"]["code"] == "OVER_LENGTH" and rejects["train-1"]["detail"].endswith(
        f"> {n_short}"
    )
    assert list(result.token_lengths) == [n_short]
    assert f"max {n_short}" in report_markdown(result, CleanOptions(max_tokens=n_short))


def test_travel_data_near_duplicates_are_real(tmp_path, travel_rows):
    rows = [row(i, r["prompt"], r["completion"], group=r["group"]) for i, r in enumerate(travel_rows)]
    result, _, rejects = run(tmp_path, rows)
    assert set(result.rejected) <= {"DUPLICATE", "NEAR_DUPLICATE"}
    assert sum(result.rejected.values()) / len(rows) < 0.05  # the travel config allows 5%
    by_id = {r["id"]: r for r in rows}
    for rej in rejects.values():  # a near-duplicate has the same target as the row it duplicates
        kept_id = rej["detail"].split()[-1]
        assert by_id[rej["row"]]["completion"] == by_id[kept_id]["completion"]


def test_clean_reasons_are_all_tested():
    tested = {"DUPLICATE", "NEAR_DUPLICATE", "EVAL_LEAK", "PII_BLOCKED", "OVER_LENGTH"}
    assert tested == {c for c, r in REASONS.items() if r.stage == "clean" and r.severity == "error"}


def test_bad_pii_option(tmp_path):
    with pytest.raises(ValueError, match="redact, block or off"):
        run(tmp_path, [row(0, "x")], pii="mask")
