"""Shape inspection ranks hypotheses with a confidence and a reason; auto-pick needs >= 0.8."""

from __future__ import annotations

import pytest

from components.ingest.shapes import AUTO_PICK, ShapeError, inspect_rows, resolve_shape

TURNS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
SAMPLES = {
    "prompt_completion": [{"prompt": f"p{i}", "completion": f"c{i}", "id": str(i)} for i in range(20)],
    "alpaca": [{"instruction": f"i{i}", "input": "", "output": f"o{i}"} for i in range(20)],
    "messages": [{"messages": TURNS} for _ in range(20)],
    "sharegpt": [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}] * 20,
    "text": [{"text": f"some text {i}", "meta": "x"} for i in range(20)],
}


@pytest.mark.parametrize("shape", sorted(SAMPLES))
def test_each_shape_ranks_first_with_a_reason(shape):
    best = inspect_rows(SAMPLES[shape])[0]
    assert best.shape == shape and best.confidence >= AUTO_PICK
    assert "20/20 rows" in best.rationale


def test_auto_picks_trainable_shapes_and_refuses_plain_text():
    assert resolve_shape(inspect_rows(SAMPLES["messages"])).shape == "messages"
    with pytest.raises(ShapeError, match=r"looks like shape 'text'.*convert it"):
        resolve_shape(inspect_rows(SAMPLES["text"]))


def test_field_map_by_column_names_is_a_guess_below_auto_pick():
    rows = [{"question": f"q{i}", "answer": f"a{i}", "uid": str(i)} for i in range(20)]
    ranked = inspect_rows(rows)
    assert ranked[0].fields == {"prompt": "question", "completion": "answer"}
    assert ranked[0].confidence < AUTO_PICK
    with pytest.raises(ShapeError, match=r"no shape reaches confidence 0.8 .*data.fields"):
        resolve_shape(ranked)
    assert resolve_shape(ranked, force=True).fields["prompt"] == "question"


def test_unnamed_columns_are_guessed_by_length_with_low_confidence():
    rows = [{"a": "short", "b": "a much longer target text " * 3} for _ in range(20)]
    (h,) = inspect_rows(rows)
    assert (
        h.fields == {"prompt": "a", "completion": "b"}
        and h.confidence == 0.4
        and "length only" in h.rationale
    )


def test_mixed_sample_lowers_confidence():
    rows = SAMPLES["messages"][:10] + SAMPLES["prompt_completion"][:10]
    ranked = inspect_rows(rows)
    assert all(h.confidence < AUTO_PICK for h in ranked)
    with pytest.raises(ShapeError):
        resolve_shape(ranked)


def test_no_rows():
    assert inspect_rows([]) == []
    with pytest.raises(ShapeError, match="no rows"):
        resolve_shape([])
