"""Tests for the data of the support (classification) and replies (generation) examples: the committed JSONL
files are reproduced byte for byte by their generators, and the rows are consistent with the configs."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    # The generators are standalone scripts, not part of a package, so load them from their paths.
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / name / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


support = _load("support")
replies = _load("replies")
GENERATORS = {"support": support, "replies": replies}


def _config(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name / "config.yaml").read_text(encoding="utf-8"))


def _committed(name: str) -> list[dict]:
    path = EXAMPLES / name / "data" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def support_rows() -> list[dict]:
    return support.generate()


@pytest.fixture(scope="module")
def replies_rows() -> list[dict]:
    return replies.generate()


# --------------------------------------------------------------------------------------------------------
# Both examples
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["support", "replies"])
def test_committed_file_is_reproducible(name, request):
    rows = request.getfixturevalue(f"{name}_rows")
    committed = (EXAMPLES / name / "data" / f"{name}.jsonl").read_bytes()
    assert GENERATORS[name].to_jsonl(rows).encode("utf-8") == committed


@pytest.mark.parametrize("name", ["support", "replies"])
def test_rows_are_well_formed_and_unique(name):
    rows = _committed(name)
    assert len(rows) == 1500
    assert [row["id"] for row in rows] == [f"{name}-{i:05d}" for i in range(1, 1501)]
    for row in rows:
        assert set(row) == {"id", "group", "prompt", "completion"}
        assert all(isinstance(v, str) and v == v.strip() and v for v in row.values()), row["id"]
    assert len({row["prompt"] for row in rows}) == len(rows)  # so no prompt has two completions
    assert len({json.dumps(row, sort_keys=True) for row in rows}) == len(rows)


@pytest.mark.parametrize("name", ["support", "replies"])
def test_groups_are_paraphrase_families(name):
    groups = defaultdict(list)
    for row in _committed(name):
        groups[row["group"]].append(row)
    for group, members in groups.items():
        assert 2 <= len(members) <= 3, group
        assert len({m["completion"] for m in members}) == 1, group  # one label / reply per family
        assert len({m["prompt"].lower() for m in members}) == len(members), group
    # rows of a family are consecutive, so a group id is never reused further down the file
    order = [row["group"] for row in _committed(name)]
    assert order == sorted(order)


@pytest.mark.parametrize("name", ["support", "replies"])
def test_same_seed_same_rows_different_seed_different_rows(name):
    gen = GENERATORS[name]
    assert gen.generate(100, seed=11) == gen.generate(100, seed=11)
    assert gen.generate(100, seed=11) != gen.generate(100, seed=12)


@pytest.mark.parametrize("name", ["support", "replies"])
def test_cli_check(name, tmp_path, capsys):
    gen = GENERATORS[name]
    out = tmp_path / f"{name}.jsonl"
    assert gen.main(["--n", "50", "--seed", "3", "--out", str(out)]) == 0
    assert gen.main(["--n", "50", "--seed", "3", "--out", str(out), "--check"]) == 0
    out.write_bytes(out.read_bytes().replace(b"\n", b"\r\n", 1))
    assert gen.main(["--n", "50", "--seed", "3", "--out", str(out), "--check"]) == 1
    assert "differs" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "task_type"), [("support", "classification"), ("replies", "generation")])
def test_config_matches_the_example(name, task_type):
    cfg = _config(name)
    assert cfg["task"]["type"] == task_type
    assert cfg["model"] == {"base": f"tiny://{name}", "method": "full"}
    assert cfg["data"]["train"] == f"data/{name}.jsonl"
    assert cfg["data"]["split"]["eval_fraction"] == 0.1
    assert cfg["gates"]["rules"], "an example ships gates"
    from components.common.task import METRICS

    for rule in cfg["gates"]["rules"]:
        assert rule["metric"].split("/")[0] in METRICS[task_type], rule


# --------------------------------------------------------------------------------------------------------
# support: classification
# --------------------------------------------------------------------------------------------------------


def test_support_labels_are_the_config_labels():
    labels = _config("support")["task"]["labels"]
    assert sorted(labels) == sorted(support.LABELS)
    counts = Counter(row["completion"] for row in _committed("support"))
    assert set(counts) == set(labels)  # every completion is exactly a label, and every label is used
    for label in labels:
        assert 0.10 < counts[label] / 1500 < 0.25, (label, counts[label])


def test_support_rows_follow_the_labelling_rule():
    for row in _committed("support"):
        assert support.oracle(row["prompt"]) == row["completion"], row["id"]


def test_support_label_is_not_one_fixed_phrase():
    # A label's messages share no phrase: many rows mention a lower-precedence topic too.
    rows = _committed("support")
    mixed = [
        row
        for row in rows
        if any(
            support.CUES[other].search(row["prompt"].lower())
            for other in support.LABELS[support.LABELS.index(row["completion"]) + 1 : -1]
        )
    ]
    assert len(mixed) / len(rows) > 0.2
    for label in ("technical", "refund", "billing", "account"):
        assert any(row["completion"] == label for row in mixed), label


@pytest.mark.parametrize(
    ("message", "label"),
    [
        ("The refund form won't load", "technical"),
        ("Please refund the double charge on my card", "refund"),
        ("I was charged twice for order 12345", "billing"),
        ("How do I update the card on my profile?", "billing"),
        ("I can't log in to track my parcel", "account"),
        ("My parcel hasn't arrived yet", "shipping"),
        ("Do you have a shop in Lisbon?", "other"),
        ("Can you deliver to Lisbon? Also, are you hiring in Lisbon?", "shipping"),
    ],
)
def test_support_oracle_precedence(message, label):
    assert support.oracle(message) == label


# --------------------------------------------------------------------------------------------------------
# replies: generation
# --------------------------------------------------------------------------------------------------------


def test_replies_follow_from_the_note():
    for row in _committed("replies"):
        assert replies.reply(replies.read_note(row["prompt"])) == row["completion"], row["id"]


def test_replies_are_one_sentence():
    for row in _committed("replies"):
        reply = row["completion"]
        assert reply.startswith("Your ") and reply.endswith(".") and reply.count(".") == 1, row["id"]


def test_replies_cover_every_kind_and_action():
    combos = Counter()
    for row in _committed("replies"):
        booking = replies.read_note(row["prompt"])
        combos[booking["kind"], booking["action"]] += 1
    assert set(combos) == {(k, a) for k in replies.KINDS for a in replies.ACTIONS}
    assert min(combos.values()) >= 40


@pytest.mark.parametrize(
    ("note", "reply"),
    [
        (
            "Confirm: hotel Lisbon 3 nights from 12 May",
            "Your 3-night stay in Lisbon from 12 May is confirmed.",
        ),
        (
            "flt Rome > Paris | May 14 | moved",
            "Your flight from Rome to Paris has been moved to 14 May.",
        ),
        (
            "dinner; 4 pax; Rome; 22 Mar; status: canceled",
            "Your table for 4 in Rome on 22 March has been cancelled.",
        ),
        (
            "car hire, two days, SUV, OSLO, pick-up Sep 1st - on hold",
            "Your 2-day SUV car rental in Oslo from 1 September is pending confirmation.",
        ),
    ],
)
def test_replies_hand_written(note, reply):
    assert replies.reply(replies.read_note(note)) == reply


@pytest.mark.parametrize(
    "note", ["hotel Lisbon 3 nights 12 May", "Confirm: Lisbon 3 nights 12 May", "Confirm: hotel"]
)
def test_replies_unreadable_notes_raise(note):
    with pytest.raises(ValueError):
        replies.read_note(note)
