"""Task rendering and scoring: one definition shared by training and evaluation."""

from __future__ import annotations

import json

from components.common.task import (
    field_name,
    leaves,
    parse_json,
    prompt_messages,
    prompt_token_ids,
    training_example,
)

TARGET = '[{"command":"start_flow","flow":"book_table"},{"command":"set_slot","slot":"city","value":"Rome"}]'


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


def test_canonical_json_follows_the_declared_key_order_through_refs_and_branches():
    from components.common.task import JsonCanonicalizer, canonical_json

    schema = {
        "type": "array",
        "items": {"oneOf": [{"$ref": "#/$defs/event"}, {"$ref": "#/$defs/note"}]},
        "$defs": {
            "event": {
                "type": "object",
                "properties": {"name": {}, "type": {"const": "event"}, "date": {}},
                "required": ["type"],
            },
            "note": {
                "type": "object",
                "properties": {"type": {"const": "note"}, "text": {}},
                "required": ["type"],
            },
        },
    }
    value = [{"date": "mon", "type": "event", "name": "x"}, {"text": "hé", "type": "note"}]
    text = canonical_json(value, schema)
    assert text == '[{"name":"x","type":"event","date":"mon"},{"type":"note","text":"hé"}]'
    # undeclared keys follow the declared ones, in their own order; a lone surrogate stays escaped
    flat = {"type": "object", "properties": {"b": {}, "a": {}}}
    assert JsonCanonicalizer(flat)({"z": 1, "a": 2, "b": 3}) == '{"b":3,"a":2,"z":1}'
    assert JsonCanonicalizer(flat)({"a": "\ud800"}) == '{"a":"\\ud800"}'
