"""Each component's python_func, called with real artifacts in tmp_path: the KFP layer around core.py
writes the files, metrics and provenance the next stage reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model
from train_step import train_step_inputs

from components import (
    clean_op,
    evaluate_base_op,
    evaluate_champion_op,
    evaluate_op,
    export_op,
    gate_op,
    ingest_op,
    register_op,
    retrieval_baseline_op,
    split_op,
    train_op,
)
from components.common.events import read_events
from components.common.task import METRICS
from components.version import __version__
from pipelines.parameters import pipeline_parameters, step_inputs

SHA = "0" * 64


def artifact(cls, tmp_path, name, metadata=None):
    a = cls(uri=str(tmp_path / name))
    a.metadata.update(metadata or {})
    return a


def artifacts(tmp_path, **kinds) -> tuple:
    """One empty artifact per keyword, ``name=Class``, in order (outputs for a component call)."""
    return tuple(artifact(cls, tmp_path, name) for name, cls in kinds.items())


@pytest.fixture(scope="module")
def params(travel_config) -> dict:
    return pipeline_parameters(travel_config)


def step_args(params: dict, step: str, **overrides) -> dict:
    """The inputs ``step`` takes from the pipeline parameters, as the compiled pipeline passes them, with
    this test's provenance hash and ``overrides``."""
    args = step_inputs(step, params)
    return {**args, **({"config_hash": SHA} if "config_hash" in args else {}), **overrides}


@pytest.fixture()
def split_outputs(tmp_path, params):
    """ingest -> clean -> split on the travel data, as the pipeline wires them."""
    data, rejects, events = artifacts(tmp_path, data=Dataset, rej=Dataset, ev=Artifact)
    ingest_op.python_func(**step_args(params, "ingest"), dataset=data, rejects=rejects, events=events)
    cleaned, rejects2, events2 = artifacts(tmp_path, cl=Dataset, rej2=Dataset, ev2=Artifact)
    report = artifact(Markdown, tmp_path, "clean.md")
    clean_op.python_func(
        **step_args(params, "clean", dataset=data, upstream_events=events),
        cleaned=cleaned,
        rejects=rejects2,
        events=events2,
        report=report,
    )
    train, held = artifact(Dataset, tmp_path, "train"), artifact(Dataset, tmp_path, "eval")
    watched = artifact(Dataset, tmp_path, "validation")
    card, summary, events3 = artifacts(tmp_path, card=Artifact, summary_md=Markdown, ev3=Artifact)
    split_op.python_func(
        **step_args(
            params,
            "split",
            dataset=cleaned,
            upstream_events=events2,
            eval_fraction=0.1,
            validation_fraction=0.05,  # the demo config sets none; the slice is tested here
            seed=13,
        ),
        train_data=train,
        eval_data=held,
        validation_data=watched,
        card=card,
        summary=summary,
        events=events3,
    )
    return data, cleaned, train, held, card, events3, watched


def test_data_stages_write_counts_provenance_card_and_events(split_outputs, tmp_path):
    data, cleaned, train, held, _card, events, watched = split_outputs
    assert (
        data.metadata["rows"] == data.metadata["rows_in"] == 3000
        and data.metadata["shape"] == "prompt_completion"
    )
    assert len(data.metadata["sha256"]) == 64 and data.metadata["config_hash"] == SHA
    assert data.metadata["slmforge_version"] == __version__ and data.metadata["git_sha"]
    removed = 3000 - cleaned.metadata["rows"]
    assert 0 < removed < 150  # template-generated near-duplicates (see examples/travel/config.yaml)
    assert (
        train.metadata["rows"] + held.metadata["rows"] + watched.metadata["rows"] == cleaned.metadata["rows"]
    )
    assert 0 < watched.metadata["rows"] < held.metadata["rows"]  # data.split.validation_fraction 0.05 < 0.1
    assert train.metadata["upstream"] == {"dataset": cleaned.metadata["sha256"]}
    assert cleaned.metadata["upstream"] == {"dataset": data.metadata["sha256"]}
    assert held.metadata["sha256"] != train.metadata["sha256"]
    manifest = json.loads((tmp_path / "card" / "manifest.json").read_text())
    assert manifest["rows"]["in"] == 3000 and manifest["rows"]["accounted"]
    assert sum(manifest["rejected_by_reason"].values()) == removed
    assert manifest["sources"][0]["sha256"] and manifest["sha256"]["train"] == train.metadata["sha256"]
    assert (tmp_path / "summary_md").read_text() == (tmp_path / "card" / "dataset_summary.md").read_text()
    stages = [e["stage"] for e in read_events(events.path)]
    assert stages[0] == "ingest" and "clean" in stages and stages[-1] == "split"


def test_train_then_evaluate_candidate_and_base(split_outputs, tmp_path, params):
    _, _, train, held, _, _, watched = split_outputs
    model, train_metrics = artifact(Model, tmp_path, "model"), artifact(Metrics, tmp_path, "train_metrics")
    curve = artifact(Artifact, tmp_path, "loss_curve")
    inputs = train_step_inputs(
        train,
        params["system_prompt"],
        max_steps=10,
        max_length=192,
        seed=1,
        group_by_length=True,
        backend="auto",
        grad_accum=2,
        checkpoint_steps=4,
        validation_data=watched,
        eval_steps=5,
        experiment="components-test",
        config_hash=SHA,
    )
    train_op.python_func(**inputs, model=model, metrics=train_metrics, loss_curve=curve)
    assert train_metrics.metadata["steps"] == 10.0 and train_metrics.metadata["world_size"] == 1.0
    assert (
        0 < train_metrics.metadata["padding_efficiency"] <= 1 and train_metrics.metadata["tokens_per_s"] > 0
    )
    assert (tmp_path / "loss_curve" / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert curve.metadata["mlflow_run_id"]
    assert not (tmp_path / "checkpoints").exists()  # removed once the model is written
    assert train_metrics.metadata["final_loss"] < train_metrics.metadata["first_loss"]
    assert 0 < train_metrics.metadata["best_eval_loss"] <= train_metrics.metadata["final_eval_loss"]
    assert model.metadata["upstream"] == {"train_data": train.metadata["sha256"]}
    assert model.metadata["method"] == "full" and model.metadata["base_model"] == "tiny://travel"

    common = step_args(params, "task", eval_data=held, max_examples=24)
    gen = dict(decoding="free", max_new_tokens=16, batch_size=16)
    outs = {
        name: (
            artifact(Metrics, tmp_path, f"{name}_m"),
            artifact(Dataset, tmp_path, f"{name}_p"),
            artifact(ClassificationMetrics, tmp_path, f"{name}_c"),
        )
        for name in ("candidate", "base", "champion", "retrieval")
    }

    def out(name):
        m, p, c = outs[name]
        return {"metrics": m, "predictions": p, "classification": c}

    evaluate_op.python_func(model=model, **common, **gen, **out("candidate"))
    evaluate_base_op.python_func(base_model="tiny://travel", **common, **gen, **out("base"))
    registry = json.dumps({"backend": "mlflow", "tracking_uri": f"sqlite:///{tmp_path / 'reg.db'}"})
    evaluate_champion_op.python_func(
        model_name="none-yet", registry=registry, **common, **gen, **out("champion")
    )
    retrieval_baseline_op.python_func(train_data=train, **common, **out("retrieval"))
    for name in ("candidate", "base", "retrieval"):
        m, p, _ = outs[name]
        assert m.metadata["examples"] == 24.0
        assert set(m.metadata) >= set(METRICS["structured"])
        assert "sha256" not in m.metadata  # Metrics carry metrics only; provenance is on predictions
        assert p.metadata["examples"] == 24 and p.metadata["upstream"]["eval_data"] == held.metadata["sha256"]
        assert (
            p.metadata["settings"]["eval_sha256"] == outs["candidate"][1].metadata["settings"]["eval_sha256"]
        )
    assert outs["candidate"][1].metadata["upstream"]["model"] == model.metadata["sha256"]
    assert outs["base"][1].metadata["model"] == "base:tiny://travel"
    assert outs["base"][0].metadata["exact_match"] == 0.0  # random weights
    assert outs["champion"][0].metadata == {"available": 0.0}  # nothing registered as champion yet
    assert outs["retrieval"][1].metadata["settings"]["decoding"] == "retrieval"

    rules = json.dumps(
        [
            {"metric": "exact_match", "not_worse_than": "base"},
            {"metric": "exact_match", "not_worse_than": "champion"},
            {"metric": "schema_validity", "min": 0.0},
        ]
    )
    report, html, div = artifacts(tmp_path, report=Markdown, html=HTML, div=Dataset)
    reasons = tmp_path / "reasons"
    passed = gate_op.python_func(
        candidate=outs["candidate"][0],
        candidate_predictions=outs["candidate"][1],
        candidate_classification=outs["candidate"][2],
        base=outs["base"][0],
        base_predictions=outs["base"][1],
        champion=outs["champion"][0],
        champion_predictions=outs["champion"][1],
        retrieval=outs["retrieval"][0],
        retrieval_predictions=outs["retrieval"][1],
        task_type="structured",
        rules=rules,
        bootstrap=params["gate_bootstrap"],
        title="components-test",
        report=report,
        html_report=html,
        divergences=div,
        reasons=str(reasons),
    )
    assert passed is True
    lines = reasons.read_text().splitlines()
    assert lines[1].startswith("SKIPPED") and "champion" in lines[1]
    page = (tmp_path / "html").read_text()
    assert "<h2>Metrics</h2>" in page and "retrieval" in page and "<svg" in page  # field-match chart
    import pyarrow.parquet as pq

    table = pq.read_table(str(tmp_path / "div"))
    assert table.num_rows == 24 and {"candidate", "base", "retrieval", "vs_base"} <= set(table.column_names)
    assert "## Metrics vs baselines" in Path(report.path).read_text()

    # export: the gated model as safetensors, evaluated again like the candidate, with card and lineage
    split_card = artifact(Artifact, tmp_path, "split_card")
    Path(split_card.path).mkdir()
    Path(split_card.path, "manifest.json").write_text(
        json.dumps(
            {
                "rows": {"in": 400, "rejected": 0, "train": 376, "eval": 24, "accounted": True},
                "sha256": {
                    "dataset": "c" * 64,
                    "train": train.metadata["sha256"],
                    "eval": held.metadata["sha256"],
                },
                "sources": [
                    {"source": "train", "locator": "travel.jsonl", "sha256": "f" * 64, "rows_in": 400}
                ],
            }
        )
    )
    exported, ex_metrics, ex_pred, card = artifacts(
        tmp_path, exported=Model, exm=Metrics, exp=Dataset, mc=Markdown
    )
    export_op.python_func(
        model=model,
        eval_data=held,
        train_data=train,
        split_card=split_card,
        candidate_metrics=outs["candidate"][0],
        candidate_predictions=outs["candidate"][1],
        gate_report=report,
        system_prompt=params["system_prompt"],
        task_type="structured",
        output_schema=params["output_schema"],
        labels="[]",
        max_examples=24,
        **gen,
        gate_rules=rules,
        tolerance=0.0,
        quantize="int8",
        quantized_tolerance=1.0,
        trust_remote_code="{}",
        model_name="components-test",
        config_hash=SHA,
        parity_accelerator_type="NVIDIA_L4",
        parity_accelerator_count=1,
        exported=exported,
        metrics=ex_metrics,
        predictions=ex_pred,
        card=card,
    )
    assert ex_metrics.metadata["exact_match"] == outs["candidate"][0].metadata["exact_match"]
    assert exported.metadata["changed_answers"] == 0 and exported.metadata["kind"] == "full"
    assert [v["kind"] for v in exported.metadata["variants"]] == ["int8"]
    assert (Path(exported.path) / "quantized" / "int8" / "model.safetensors").is_file()
    assert {p.name for p in Path(exported.path).iterdir()} >= {
        "model.safetensors",
        "MODEL_CARD.md",
        "lineage.json",
        "tokenizer.json",
        "generation_config.json",
    }
    assert not [p for p in Path(exported.path).iterdir() if p.suffix == ".bin"]
    lineage = exported.metadata["lineage"]
    assert lineage["adapter"]["sha256"] == model.metadata["sha256"]
    assert (
        lineage["split_train"]["sha256"] == train.metadata["sha256"] and lineage["data"]["sha256"] == "f" * 64
    )
    text = Path(card.path).read_text()
    for heading in (
        "## Model",
        "## Data",
        "## Evaluation and gate",
        "## Export parity",
        "## Intended use and limits",
        "## Lineage",
        "Metrics vs baselines",
        "Variant `quantized/int8/`",
    ):
        assert heading in text, heading


def test_register_is_idempotent_by_weights_hash(tmp_path, tiny_model):
    import shutil

    from mlflow import MlflowClient

    from components.common.models import write_model_info
    from components.common.provenance import sha256_path

    shutil.copytree(tiny_model, tmp_path / "model")
    write_model_info(tmp_path / "model", kind="full", base_model="tiny://travel")
    weights = sha256_path(tmp_path / "model")
    model = artifact(
        Model, tmp_path, "model", {"sha256": weights, "base_model": "tiny://travel", "git_sha": "abc"}
    )
    metrics = artifact(Metrics, tmp_path, "m", {"exact_match": 0.97, "field_match/[].value": 0.9})
    data = artifact(Dataset, tmp_path, "d", {"sha256": "d" * 64})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    kwargs = dict(
        model=model,
        metrics=metrics,
        train_data=data,
        model_name="travel-test",
        registry=json.dumps({"backend": "mlflow", "tracking_uri": uri}),
        config_hash=SHA,
        gate_passed=True,
        gate_reasons="PASS exact_match",
        pipeline_run="run-1",
    )
    first = register_op.python_func(registered=artifact(Model, tmp_path, "r1"), **kwargs)
    second = register_op.python_func(registered=artifact(Model, tmp_path, "r2"), **kwargs)
    assert first == second == "models:/travel-test/1"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert len(client.search_model_versions("name = 'travel-test'")) == 1
    mv = client.get_model_version_by_alias("travel-test", "candidate")
    assert mv.version in ("1", 1)
    assert mv.tags["data_sha256"] == "d" * 64 and mv.tags["config_hash"] == SHA
    assert mv.tags["pipeline_run"] == "run-1" and mv.tags["weights_sha256"] == weights
    assert mv.tags["gate_passed"] == "true" and mv.tags["gate_failed_rules"] == "[]"
    record = json.loads((tmp_path / "r1").read_text())
    assert record["created"] is True and json.loads((tmp_path / "r2").read_text())["created"] is False
    run = client.get_run(mv.run_id)
    assert run.data.metrics["exact_match"] == 0.97 and "field_match/_.value" in run.data.metrics
    assert {a.path for a in client.list_artifacts(mv.run_id, "model")} >= {
        "model/model.safetensors",
        "model/slmforge_model.json",
    }
