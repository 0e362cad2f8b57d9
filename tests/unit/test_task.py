"""Task rendering and scoring: one definition shared by training and evaluation."""

from __future__ import annotations

import json

import pytest

from components.common.task import (
    aggregate,
    field_name,
    leaves,
    parse_json,
    prompt_messages,
    prompt_token_ids,
    schema_validator,
    score_structured,
    training_example,
)

TARGET = '[{"command":"start_flow","flow":"book_table"},{"command":"set_slot","slot":"city","value":"Rome"}]'


@pytest.fixture(scope="module")
def validator(travel_schema):
    return schema_validator(travel_schema)


def test_exact_match_compares_parsed_json(validator):
    spaced = json.dumps(json.loads(TARGET), indent=1)
    s = score_structured(spaced, TARGET, validator)
    assert (s.json_valid, s.schema_valid, s.exact) == (True, True, True)
    assert s.fields == {"[].command": (2, 2), "[].flow": (1, 1), "[].slot": (1, 1), "[].value": (1, 1)}


def test_wrong_value_is_valid_but_not_exact(validator):
    s = score_structured(TARGET.replace("Rome", "Paris"), TARGET, validator)
    assert (s.json_valid, s.schema_valid, s.exact) == (True, True, False)
    assert s.fields["[].value"] == (0, 1)


def test_invalid_json_scores_zero_and_counts_expected_fields(validator):
    s = score_structured('[{"command":"start_flow"', TARGET, validator)
    assert (s.json_valid, s.schema_valid, s.exact) == (False, False, False)
    assert s.error.startswith("not JSON")
    assert s.fields["[].command"] == (0, 2)


def test_schema_violation(validator):
    s = score_structured('[{"command":"start_flow","flow":"book_rocket"}]', TARGET, validator)
    assert s.json_valid and not s.schema_valid and not s.exact
    assert s.error.startswith("schema:")


def test_aggregate_fractions(validator):
    scores = [
        score_structured(TARGET, TARGET, validator),
        score_structured("nope", TARGET, validator),
        score_structured(TARGET.replace("Rome", "Paris"), TARGET, validator),
        score_structured('[{"command":"start_flow","flow":"book_rocket"}]', TARGET, validator),
    ]
    m = aggregate(scores)
    assert m["json_validity"] == 0.75
    assert m["schema_validity"] == 0.5
    assert m["exact_match"] == 0.25
    assert m["examples"] == 4
    assert 0 < m["field_match"] < 1
    with pytest.raises(ValueError, match="eval split is empty"):
        aggregate([])


def test_leaves_and_field_names():
    flat = leaves(json.loads(TARGET))
    assert flat == {
        "[0].command": "start_flow",
        "[0].flow": "book_table",
        "[1].command": "set_slot",
        "[1].slot": "city",
        "[1].value": "Rome",
    }
    assert field_name("[12].value") == "[].value"
    assert parse_json(" [1] \n") == ([1], None)


def test_training_and_eval_render_the_same_prompt(tiny_model):
    """The tokens TRL trains on start with exactly the tokens evaluation prompts with."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    example = training_example("sys", "Book a table in Rome", TARGET)
    full = tok.apply_chat_template(example["prompt"] + example["completion"], tokenize=True, return_dict=True)
    prompt = prompt_token_ids(tok, "sys", "Book a table in Rome")
    assert full["input_ids"][: len(prompt)] == prompt
    assert tok.decode(full["input_ids"][len(prompt) :]).startswith(TARGET)
    assert prompt_messages("", "hi") == [{"role": "user", "content": "hi"}]


def test_chat_history_renders_the_same_in_training_and_eval(tiny_model):
    """A multi-turn row: earlier turns are context in both paths, the row's own system turn wins."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    history = json.dumps(
        [
            {"role": "system", "content": "row system"},
            {"role": "user", "content": "Book a table in Rome"},
            {"role": "assistant", "content": TARGET},
        ]
    )
    example = training_example("config system", "For 4 people", '[{"command":"set_slot"}]', history)
    assert [m["role"] for m in example["prompt"]] == ["system", "user", "assistant", "user"]
    assert example["prompt"][0]["content"] == "row system"  # not the config's
    full = tok.apply_chat_template(example["prompt"] + example["completion"], tokenize=True, return_dict=True)
    prompt = prompt_token_ids(tok, "config system", "For 4 people", history)
    assert full["input_ids"][: len(prompt)] == prompt
    without_system = json.dumps(json.loads(history)[1:])
    assert prompt_messages("config system", "x", without_system)[0] == {
        "role": "system",
        "content": "config system",
    }
