"""Scoring by task type: structured (validity and match families), classification, generation."""

from __future__ import annotations

import json

import pytest

from components.common.scoring import INVALID, TaskSpec, schema_vocabulary, score

TARGET = '[{"command":"start_flow","flow":"book_table"},{"command":"set_slot","slot":"city","value":"Rome"}]'


@pytest.fixture(scope="module")
def structured(travel_schema) -> TaskSpec:
    return TaskSpec("structured", travel_schema)


def _one(task, prediction, target=TARGET):
    s = score(task, [prediction], [target])
    return {k: v[0] for k, v in s.per_example.items()}, s


def test_exact_match_compares_parsed_json(structured):
    row, s = _one(structured, json.dumps(json.loads(TARGET), indent=1))
    assert row == {
        "json_validity": 1.0,
        "schema_validity": 1.0,
        "vocabulary_validity": 1.0,
        "exact_match": 1.0,
        "field_match": 1.0,
    }
    assert s.metrics["field_match/[].value"] == 1.0 and s.metrics["argument_fidelity"] == 1.0


def test_wrong_argument_is_valid_but_not_exact(structured):
    row, s = _one(structured, TARGET.replace("Rome", "Paris"))
    assert (row["schema_validity"], row["vocabulary_validity"], row["exact_match"]) == (1.0, 1.0, 0.0)
    assert s.metrics["field_match/[].value"] == 0.0
    assert s.metrics["argument_fidelity"] == 0.0  # right commands, wrong argument
    assert s.details[0]["fields_differing"] == ["[].value"]


def test_invalid_json_scores_zero_and_counts_expected_fields(structured):
    row, s = _one(structured, '[{"command":"start_flow"')
    assert row["json_validity"] == row["schema_validity"] == row["exact_match"] == 0.0
    assert s.details[0]["error"].startswith("not JSON")
    assert s.metrics["field_match/[].command"] == 0.0


def test_vocabulary_validity_is_about_enum_values(structured):
    row, s = _one(structured, '[{"command":"start_flow","flow":"book_rocket"}]')
    assert row["json_validity"] == 1.0 and row["schema_validity"] == 0.0 and row["vocabulary_validity"] == 0.0
    assert s.details[0]["error"].startswith("schema:")
    # a schema violation that is not about the vocabulary (a missing required field)
    row, _ = _one(structured, '[{"command":"start_flow"}]')
    assert row["schema_validity"] == 0.0 and row["vocabulary_validity"] == 1.0


def test_schema_vocabulary_follows_refs(travel_schema):
    vocab = schema_vocabulary(travel_schema)
    assert (
        '"book_flight"' in vocab["flow"] and '"city"' in vocab["slot"] and '"start_flow"' in vocab["command"]
    )
    assert "value" not in vocab  # a free argument


def test_structured_aggregate_separates_families(structured):
    preds = [
        TARGET,
        "nope",
        TARGET.replace("Rome", "Paris"),
        '[{"command":"start_flow","flow":"book_rocket"}]',
    ]
    s = score(structured, preds, [TARGET] * 4)
    m = s.metrics
    assert (m["json_validity"], m["schema_validity"], m["vocabulary_validity"]) == (0.75, 0.5, 0.5)
    assert m["exact_match"] == 0.25 and m["examples"] == 4 and 0 < m["field_match"] < 1
    assert m["argument_fidelity"] == 0.5  # two rows with the right commands: one right value, one wrong
    with pytest.raises(ValueError, match="eval split is empty"):
        score(structured, [], [])


def test_classification_metrics_and_confusion_matrix():
    task = TaskSpec("classification", labels=["billing", "refund", "shipping"])
    targets = ["billing", "billing", "refund", "shipping", "shipping", "refund"]
    preds = ["billing", " refund\n", "refund", "shipping", "I think shipping", "refund"]
    s = score(task, preds, targets)
    m = s.metrics
    assert m["accuracy"] == pytest.approx(4 / 6) and m["label_validity"] == pytest.approx(5 / 6)
    assert m["precision/refund"] == pytest.approx(2 / 3) and m["recall/billing"] == 0.5
    f1 = [m["f1/billing"], m["f1/refund"], m["f1/shipping"]]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    categories, matrix = s.confusion
    assert categories == ["billing", "refund", "shipping", INVALID]
    assert matrix[0] == [1, 1, 0, 0] and matrix[2] == [0, 0, 1, 1]  # rows: expected
    with pytest.raises(ValueError, match=r"not labels of task\.labels"):
        score(task, ["billing"], ["cancel"])


def test_generation_metrics():
    task = TaskSpec("generation")
    targets = ["Your 3-night stay in Lisbon from 12 May is confirmed.", "Your table for 2 is booked."]
    s = score(
        task, ["Your 3-night stay in Lisbon from 12 May is confirmed. ", "Your room is booked."], targets
    )
    assert s.per_example["exact_match"] == [1.0, 0.0]
    assert s.per_example["rouge_l"][0] == 1.0 and 0 < s.per_example["rouge_l"][1] < 1
    assert 0 < s.metrics["chrf"] < 1 and 0 < s.metrics["bleu"] < 1
    assert s.metrics["exact_match"] == 0.5


def test_task_spec_from_pipeline_parameters(travel_schema):
    spec = TaskSpec.from_parts("classification", "null", '["a", "b"]')
    assert spec.labels == ["a", "b"] and spec.constraint() == {"choices": ["a", "b"]}
    assert TaskSpec.from_parts("structured", json.dumps(travel_schema), "[]").constraint() == {
        "json_schema": travel_schema
    }
    assert TaskSpec("generation").constraint() == {}
    with pytest.raises(ValueError, match=r"task\.type 'ranking'"):
        TaskSpec("ranking").scorer()
