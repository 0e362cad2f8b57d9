"""Split guarantees: seeded, groups never straddle, every label value in train, explicit eval respected."""

from __future__ import annotations

import json

import pytest

from components.common.tables import read_rows, write_rows
from components.split.card import write_card
from components.split.core import SplitOptions, choose_eval_groups, label_values, schema_enum_values, split

SCHEMA = {
    "type": "object",
    "properties": {"intent": {"enum": ["greet", "book", "rare"]}, "city": {"type": "string"}},
}


def rows_with_groups(n_groups: int, per_group: int, intent=lambda g: "book") -> list[dict[str, str]]:
    return [
        {
            "id": f"r{g}-{i}",
            "group": f"g{g}",
            "prompt": f"p{g}-{i}",
            "completion": json.dumps({"intent": intent(g), "city": f"c{g}"}),
        }
        for g in range(n_groups)
        for i in range(per_group)
    ]


def run(tmp_path, rows, **opts):
    src = tmp_path / "in.parquet"
    write_rows(rows, src)
    options = SplitOptions(**{"eval_fraction": 0.2, "seed": 1, "output_schema": SCHEMA, **opts})
    result = split(src, tmp_path / "train.parquet", tmp_path / "eval.parquet", options)
    return result, read_rows(tmp_path / "train.parquet"), read_rows(tmp_path / "eval.parquet")


def test_groups_never_straddle_and_all_rows_kept(tmp_path, travel_rows, travel_schema):
    rows = [{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in travel_rows]
    result, train, held = run(tmp_path, rows, eval_fraction=0.1, seed=13, output_schema=travel_schema)
    assert len(train) + len(held) == len(rows)
    assert not {r["group"] for r in train} & {r["group"] for r in held}
    assert abs(len(held) / len(rows) - 0.1) < 0.01
    assert set(result.labels_eval) <= set(result.labels_train)  # every command/flow/slot value is trained on


def test_seeded_and_order_independent(tmp_path):
    rows = rows_with_groups(50, 3)
    ids = lambda rs: {r["id"] for r in rs}  # noqa: E731
    _, _, a = run(tmp_path, rows)
    _, _, b = run(tmp_path, list(reversed(rows)))
    _, _, c = run(tmp_path, rows, seed=2)
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def test_rare_label_is_moved_to_train_and_reported(tmp_path):
    # exactly one group holds "rare": wherever the shuffle puts it, it must end up in train
    for seed in range(6):
        rows = rows_with_groups(10, 2, intent=lambda g: "rare" if g == 3 else "book")
        result, _train, _held = run(tmp_path, rows, seed=seed, eval_fraction=0.5)
        assert 'intent="rare"' in result.labels_train
        assert 'intent="rare"' not in result.labels_eval
        if result.moved_groups:
            assert result.moved_groups == ["g3"]
            assert [e["code"] for e in result.events] == ["SPLIT_DONE", "MOVED_TO_TRAIN"]
    assert any(run(tmp_path, rows, seed=s, eval_fraction=0.5)[0].moved_groups for s in range(6))


def test_cover_whole_completion_for_labels(tmp_path):
    rows = [
        {"id": str(i), "group": str(i), "prompt": f"p{i}", "completion": "pos" if i % 5 else "neg"}
        for i in range(20)
    ]
    result, _, _ = run(tmp_path, rows, output_schema=None, cover=["completion"], eval_fraction=0.3)
    assert set(result.labels_eval) <= set(result.labels_train) == {"completion=pos", "completion=neg"}


def test_explicit_eval_is_respected(tmp_path):
    rows = rows_with_groups(6, 2)
    for r in rows[:4]:
        r["source"] = "eval"
    result, train, held = run(tmp_path, rows)
    assert [r["id"] for r in held] == [r["id"] for r in rows[:4]]
    assert result.explicit_eval and len(train) == 8


def test_unseen_eval_label_is_reported(tmp_path):
    rows = rows_with_groups(4, 1, intent=lambda g: "greet" if g == 0 else "book")
    rows[0]["source"] = "eval"
    result, _, _ = run(tmp_path, rows)
    assert result.events[-1]["code"] == "UNSEEN_IN_TRAIN" and 'intent=\\"greet\\"' in json.dumps(
        result.events[-1]
    )


def test_label_values_and_vocabulary():
    vocab = schema_enum_values(SCHEMA)
    assert vocab == {'"greet"', '"book"', '"rare"'}
    assert label_values('{"intent": "book", "city": "Rome"}', None, vocab) == {'intent="book"'}
    assert label_values('{"intent": "book", "city": "Rome"}', ["city"], vocab) == {'city="Rome"'}
    assert label_values("not json", None, vocab) == set()


@pytest.mark.parametrize("fraction", [0, 1, -0.1])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="eval_fraction"):
        choose_eval_groups({"a": 1, "b": 1}, {}, fraction, 0)


def test_one_group_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        choose_eval_groups({"a": 4}, {}, 0.5, 0)


def test_card_accounts_for_every_row(tmp_path):
    rows = rows_with_groups(10, 2)
    result, _, _ = run(tmp_path, rows)
    upstream = [
        {
            "code": "ROWS_READ",
            "count": 23,
            "details": {"source": "train", "accepted": 21, "rejected": {"NOT_JSON": 2}},
        },
        {"code": "NOT_JSON", "count": 2},
        {"code": "DUPLICATE", "count": 1},
    ]
    options = SplitOptions(eval_fraction=0.2, seed=1, output_schema=SCHEMA)
    man = write_card(tmp_path / "card", upstream, result, options, config_hash="h", hashes={"train": "t"})
    assert man["rows"] == {
        "in": 23,
        "rejected": 3,
        "train": result.train_rows,
        "validation": 0,  # run() asks for no slice
        "eval": result.eval_rows,
        "accounted": True,
    }
    summary = (tmp_path / "card" / "dataset_summary.md").read_text()
    assert {p.name for p in (tmp_path / "card").iterdir()} == {
        "manifest.json",
        "schema.json",
        "dataset_summary.md",
    }
    assert "| `NOT_JSON` | 2 |" in summary and "| `DUPLICATE` | 1 |" in summary
    assert '| `intent="book"` |' in summary and "## Length" in summary
    schema = json.loads((tmp_path / "card" / "schema.json").read_text())
    assert schema["completion_schema"] == SCHEMA and "history" in schema["columns"]


def test_the_validation_slice_comes_from_train_and_never_touches_eval(tmp_path, travel_rows, travel_schema):
    """Whole groups, taken from the training side only (the gate's eval rows are the same with or without
    a slice), seeded, about validation_fraction of the rows, every label value still in train; the card
    counts it."""
    rows = [{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in travel_rows]
    src = tmp_path / "in.parquet"
    write_rows(rows, src)
    options = SplitOptions(eval_fraction=0.1, seed=13, output_schema=travel_schema, validation_fraction=0.05)
    paths = {name: tmp_path / f"{name}.parquet" for name in ("train", "eval", "validation")}
    result = split(src, paths["train"], paths["eval"], options, paths["validation"])
    train, held, watched = (read_rows(paths[n]) for n in ("train", "eval", "validation"))
    assert len(train) + len(held) + len(watched) == len(rows)
    assert (result.train_rows, result.eval_rows, result.validation_rows) == (
        len(train),
        len(held),
        len(watched),
    )
    groups = {name: {r["group"] for r in part} for name, part in (("t", train), ("e", held), ("v", watched))}
    assert not groups["v"] & groups["t"] and not groups["v"] & groups["e"] and not groups["t"] & groups["e"]
    assert result.validation_groups == len(groups["v"]) and abs(len(watched) / len(rows) - 0.05) < 0.01

    no_slice = tmp_path / "no-slice"
    no_slice.mkdir()
    options_off = SplitOptions(eval_fraction=0.1, seed=13, output_schema=travel_schema)
    split(src, no_slice / "train.parquet", no_slice / "eval.parquet", options_off)
    assert {r["id"] for r in read_rows(no_slice / "eval.parquet")} == {r["id"] for r in held}

    vocabulary = schema_enum_values(travel_schema)
    in_train = set().union(*(label_values(r["completion"], None, vocabulary) for r in train))
    in_slice = set().union(*(label_values(r["completion"], None, vocabulary) for r in watched))
    assert in_slice <= in_train  # coverage kept: the slice holds no label value train lacks

    again = tmp_path / "again"
    again.mkdir()
    split(src, again / "t.parquet", again / "e.parquet", options, again / "v.parquet")
    assert [r["id"] for r in read_rows(again / "v.parquet")] == [r["id"] for r in watched]

    man = write_card(tmp_path / "card", [], result, options, config_hash="h", hashes={})
    assert man["rows"]["validation"] == len(watched) and man["groups"]["validation"] == len(groups["v"])
    assert man["split"]["validation_fraction"] == 0.05
    summary = (tmp_path / "card" / "dataset_summary.md").read_text()
    assert f"validation slice {len(groups['v'])} groups ({len(watched)} rows) carved from train" in summary


def test_no_validation_slice_when_asked_for_none(tmp_path):
    rows = rows_with_groups(20, 2)
    src = tmp_path / "in.parquet"
    write_rows(rows, src)
    options = SplitOptions(eval_fraction=0.2, seed=1, output_schema=SCHEMA, validation_fraction=0.0)
    result = split(src, tmp_path / "t.parquet", tmp_path / "e.parquet", options, tmp_path / "v.parquet")
    assert result.validation_rows == 0 and read_rows(tmp_path / "v.parquet") == []
    assert result.train_rows + result.eval_rows == len(rows)
