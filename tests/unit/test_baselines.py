"""Baselines scored like the candidate: the retrieval baseline, the registry champion, and the settings
each records so the gate can refuse an unfair comparison."""

from __future__ import annotations

import shutil

import pytest

from components.common.scoring import TaskSpec
from components.common.tables import write_rows
from components.evaluate.retrieval import evaluate_retrieval, nearest_answers

SYSTEM = "You turn a travel request into a JSON list of commands."


def test_retrieval_answers_with_the_most_overlapping_training_prompt():
    train = [
        {"prompt": "book a hotel in Rome", "completion": "hotel-rome"},
        {"prompt": "book a table in Rome for two", "completion": "table-rome"},
        {"prompt": "cancel my flight", "completion": "cancel"},
    ]
    queries = [{"prompt": "Book a TABLE in rome"}, {"prompt": "please cancel the flight"}, {"prompt": "zzz"}]
    assert nearest_answers(train, queries) == ["table-rome", "cancel", "hotel-rome"]  # no overlap: first row
    with pytest.raises(ValueError, match="train split is empty"):
        nearest_answers([], queries)


def test_retrieval_is_scored_by_the_task_scorer(tmp_path, travel_rows, travel_schema):
    rows = [{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in travel_rows[:300]]
    write_rows(rows[:250], tmp_path / "train.parquet")
    write_rows(rows[250:], tmp_path / "eval.parquet")
    task = TaskSpec("structured", travel_schema)
    result = evaluate_retrieval(
        tmp_path / "train.parquet", tmp_path / "eval.parquet", SYSTEM, task, tmp_path / "p.parquet"
    )
    assert result.examples == 50 and result.metrics["schema_validity"] == 1.0  # answers are real targets
    assert 0 < result.metrics["exact_match"] < 1
    assert result.settings["decoding"] == "retrieval" and set(result.settings) == {
        "eval_sha256",
        "task_sha256",
        "decoding",
        "examples",
    }


def test_champion_is_downloaded_by_alias_and_evaluated_like_the_candidate(
    tmp_path, tiny_model, canonical_table
):
    from components.common.models import write_model_info
    from components.common.provenance import sha256_path
    from components.evaluate.core import evaluate
    from components.register.core import download_alias, register
    from components.register.mlflow_registry import MlflowRegistry

    registry = MlflowRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert download_alias(registry, "travel", "champion", tmp_path / "none") is None  # nothing registered yet
    shutil.copytree(tiny_model, tmp_path / "model")
    write_model_info(tmp_path / "model", kind="full", base_model="tiny://travel")
    registered = register(
        registry,
        tmp_path / "model",
        model_name="travel",
        gate_passed=True,
        weights_sha256=sha256_path(tmp_path / "model"),
        metrics={},
        tags={},
    )
    assert (
        download_alias(registry, "travel", "champion", tmp_path / "none") is None
    )  # a candidate, no champion
    registry.set_alias("travel", "champion", registered.version)
    found = download_alias(registry, "travel", "champion", tmp_path / "champion")
    assert found is not None and found[0] == "models:/travel/1"
    assert (found[1] / "model.safetensors").exists()

    task = TaskSpec("structured", {"type": "array"})
    champion = evaluate(
        str(found[1]), canonical_table, SYSTEM, task, tmp_path / "c.parquet", max_new_tokens=4, max_examples=8
    )
    base = evaluate(
        "tiny://travel",
        canonical_table,
        SYSTEM,
        task,
        tmp_path / "b.parquet",
        max_new_tokens=4,
        max_examples=8,
    )
    assert champion.settings == base.settings  # same rows, template, task, decoding: comparable
    assert champion.metrics == base.metrics  # the same weights answer the same

    # The component: the champion is found through the registry spec and scored; available = 1 is logged.
    import json

    from kfp.dsl import ClassificationMetrics, Dataset, Metrics

    from components import evaluate_champion_op

    outs = {
        "metrics": Metrics(name="m", uri=str(tmp_path / "m"), metadata={}),
        "predictions": Dataset(name="p", uri=str(tmp_path / "p"), metadata={}),
        "classification": ClassificationMetrics(name="c", uri=str(tmp_path / "c"), metadata={}),
    }
    evaluate_champion_op.python_func(
        model_name="travel",
        registry=json.dumps({"backend": "mlflow", "tracking_uri": registry.tracking_uri}),
        eval_data=Dataset(name="e", uri=str(canonical_table), metadata={"sha256": "e"}),
        system_prompt=SYSTEM,
        task_type="structured",
        output_schema=json.dumps({"type": "array"}),
        labels="[]",
        decoding="free",
        max_new_tokens=4,
        batch_size=8,
        max_examples=8,
        config_hash="0" * 64,
        **outs,
    )
    assert outs["metrics"].metadata["available"] == 1.0
    assert outs["metrics"].metadata["exact_match"] == base.metrics["exact_match"]
    assert outs["predictions"].metadata["model"] == "champion:models:/travel/1"
    assert outs["predictions"].metadata["upstream"]["model"] == "models:/travel/1"
