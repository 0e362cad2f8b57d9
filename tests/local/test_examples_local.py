"""The classification and free-generation examples through the real finetune pipeline (kfp.local):
task-specific scoring, the confusion matrix artifact, the baselines and the gate on every task type.

`make test` runs each on a shortened recipe (config overrides) for the wiring; the shipped recipes'
quality checks are marked slow (`make test-slow`, the scheduled quality workflow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.local]

# A short run: a few training steps, a few held-out rows and no gate rules (the wiring, not the quality:
# with no rules the gate passes, so export and registration run too).
SHORT = ("train.max_steps=60", "eval.max_examples=24", "gates.rules=[]")


def _run(name: str, tmp_path, monkeypatch, overrides=()):
    from components.common.config_load import load_config
    from pipelines.local import run_pipeline_local
    from pipelines.parameters import pipeline_parameters

    monkeypatch.setenv("SLMFORGE_HOME", str(tmp_path / "home"))
    cfg = load_config(REPO / "examples" / name / "config.yaml", overrides)
    return cfg, run_pipeline_local(pipeline_parameters(cfg), tmp_path / "runs")


def _confusion(run):
    from components.gate.core import confusion_from_metadata

    output = json.loads((run.run_dir / "evaluate-op" / "executor_output.json").read_text())
    return confusion_from_metadata(output["artifacts"]["classification"]["artifacts"][0]["metadata"])


def test_support_classification_example_short(tmp_path, monkeypatch):
    cfg, run = _run("support", tmp_path, monkeypatch, SHORT)
    cand = run.candidate_metrics
    assert cand["examples"] == run.base_metrics["examples"] == 24
    assert {"accuracy", "macro_f1", "label_validity"} <= set(cand)
    assert {f"f1/{label}" for label in cfg.task.labels} <= set(cand)
    labels, matrix = _confusion(run)
    assert labels[: len(cfg.task.labels)] == cfg.task.labels
    assert sum(map(sum, matrix)) == 24
    assert run.gate_passed and run.registered is not None  # no rules: nothing to fail
    assert "Confusion matrix" in (run.run_dir / "gate-op" / "html_report").read_text()


def test_replies_generation_example_short(tmp_path, monkeypatch):
    _, run = _run("replies", tmp_path, monkeypatch, SHORT)
    cand = run.candidate_metrics
    assert cand["examples"] == 24 and {"rouge_l", "chrf", "bleu", "exact_match"} <= set(cand)
    assert (run.run_dir / "gate-op" / "divergences").exists()


@pytest.mark.slow
def test_support_classification_example(tmp_path, monkeypatch):
    cfg, run = _run("support", tmp_path, monkeypatch)
    cand, base = run.candidate_metrics, run.base_metrics
    assert cand["accuracy"] >= 0.90 and cand["macro_f1"] >= 0.90, cand
    assert {f"f1/{label}" for label in cfg.task.labels} <= set(cand)
    assert base["accuracy"] < 0.5, base
    labels, matrix = _confusion(run)
    assert labels[: len(cfg.task.labels)] == cfg.task.labels
    assert sum(map(sum, matrix)) == cand["examples"]
    assert run.gate_passed, run.gate_reasons
    assert "Confusion matrix" in (run.run_dir / "gate-op" / "html_report").read_text()


@pytest.mark.slow
def test_replies_generation_example(tmp_path, monkeypatch):
    _, run = _run("replies", tmp_path, monkeypatch)
    cand, base = run.candidate_metrics, run.base_metrics
    assert cand["rouge_l"] >= 0.90 and cand["chrf"] >= 0.90, cand
    assert base["rouge_l"] < 0.3, base
    assert run.gate_passed, run.gate_reasons
    assert (run.run_dir / "gate-op" / "divergences").exists()
