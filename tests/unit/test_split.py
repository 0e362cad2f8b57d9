"""Split invariants: groups never straddle, the split is seeded, the fraction is honoured."""

from __future__ import annotations

import pytest

from components.split.core import split_rows


def rows_with_groups(n_groups: int, per_group: int) -> list[dict[str, str]]:
    return [
        {"id": f"r{g}-{i}", "group": f"g{g}", "prompt": f"p{g}-{i}", "completion": "[]"}
        for g in range(n_groups)
        for i in range(per_group)
    ]


def test_groups_never_straddle_and_all_rows_kept(travel_rows):
    rows = [{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in travel_rows]
    train, held = split_rows(rows, 0.1, seed=13)
    assert len(train) + len(held) == len(rows)
    assert not {r["group"] for r in train} & {r["group"] for r in held}
    assert abs(len(held) / len(rows) - 0.1) < 0.01


def test_seeded():
    rows = rows_with_groups(50, 3)
    a = split_rows(rows, 0.2, seed=1)
    assert a == split_rows(rows, 0.2, seed=1)
    assert {r["group"] for r in a[1]} != {r["group"] for r in split_rows(rows, 0.2, seed=2)[1]}


def test_input_order_does_not_change_membership():
    rows = rows_with_groups(40, 2)
    ids = {r["id"] for r in split_rows(rows, 0.25, 7)[1]}
    assert ids == {r["id"] for r in split_rows(list(reversed(rows)), 0.25, 7)[1]}


def test_train_never_empty():
    train, held = split_rows(rows_with_groups(2, 5), 0.99, 0)
    assert len(train) == 5 and len(held) == 5


@pytest.mark.parametrize("fraction", [0, 1, -0.1])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="eval_fraction"):
        split_rows(rows_with_groups(4, 1), fraction, 0)


def test_one_group_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        split_rows(rows_with_groups(1, 4), 0.5, 0)
