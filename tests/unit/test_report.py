"""The evaluation report: divergences per example, and an HTML page that stands alone and escapes data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from components.common.scoring import TaskSpec, score
from components.evaluate.core import write_predictions
from components.evaluate.report import Evaluated, divergences, render_html, summary

REPO = Path(__file__).resolve().parents[2]
LABELS = ["billing", "refund", "shipping"]


def _evaluated(tmp_path, name, predicted, targets, prompts) -> Evaluated:
    task = TaskSpec("classification", labels=LABELS)
    scored = score(task, predicted, targets)
    rows = [
        {"id": f"r{i}", "history": "[]", "prompt": p, "completion": t}
        for i, (p, t) in enumerate(zip(prompts, targets, strict=True))
    ]
    write_predictions(rows, predicted, scored, tmp_path / f"{name}.parquet")
    return Evaluated.load(name, scored.metrics, tmp_path / f"{name}.parquet", {"decoding": "free"}), scored


def test_divergences_count_wins_and_losses_and_the_page_escapes_data(tmp_path):
    targets = ["billing", "refund", "shipping", "refund"]
    prompts = ["charged twice", "money back", "<script>alert(1)</script> where is my parcel", "refund me"]
    cand, scored = _evaluated(
        tmp_path, "candidate", ["billing", "refund", "billing", "shipping"], targets, prompts
    )
    base, _ = _evaluated(tmp_path, "base", ["refund", "refund", "shipping", "billing"], targets, prompts)
    rows = divergences(cand, [base], "classification")
    assert [r["vs_base"] for r in rows] == ["win", "tie", "loss", "tie"]
    assert summary(rows, ["base"])["base"] == {"win": 1, "loss": 1, "tie": 2}
    page = render_html(
        title="support",
        task_type="classification",
        candidate=cand,
        baselines=[base],
        verdicts=[{"status": "fail", "sentence": "FAIL accuracy = 0.5000 (needs >= 0.9)"}],
        passed=False,
        divergence_rows=rows,
        confusion=scored.confusion,
        resamples=200,
    )
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Confusion matrix" in page and "FAIL accuracy" in page and "candidate − base [95% CI]" in page
    assert "<link" not in page and "src=" not in page  # self-contained: renders in the Vertex console
    losses_first = page.index("where is my parcel") < page.index("refund me")
    assert "charged twice" not in page.split("<h2>Divergences</h2>")[1]  # right answers are not samples
    assert losses_first  # the example the candidate lost to the base is shown first


def test_divergences_need_the_same_row_order(tmp_path):
    targets, prompts = ["billing", "refund"], ["a", "b"]
    cand, _ = _evaluated(tmp_path, "candidate", targets, targets, prompts)
    other, _ = _evaluated(tmp_path, "base", targets, targets, prompts)
    other.predictions.reverse()
    with pytest.raises(ValueError, match="not in the candidate's row order"):
        divergences(cand, [other], "classification")


def test_slmforge_eval_writes_the_report(tmp_path, tiny_model):
    """`slmforge eval` alone: candidate, base, retrieval, the gate and the same HTML report."""
    import os

    out = tmp_path / "report"
    env = {**os.environ, "SLMFORGE_HOME": os.environ["SLMFORGE_HOME"], "COLUMNS": "200"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "eval",
            str(REPO / "examples" / "travel" / "config.yaml"),
            "--model",
            "tiny://travel",
            "--out",
            str(out),
            "--max-examples",
            "16",
            "--decoding",
            "constrained",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate FAILED" in proc.stdout  # an untrained model does not pass the travel gate
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"candidate", "base", "retrieval"}
    # constrained: every answer that ends within max_new_tokens is schema-valid; free decoding of this
    # untrained model scores 0 (tests/local); a random model often runs out of budget mid-answer
    assert metrics["candidate"]["schema_validity"] > 0
    assert metrics["candidate"] == metrics["base"]  # the same untrained model, the same settings
    page = (out / "report.html").read_text()
    assert "candidate − retrieval" in page and "Field match" in page
    assert (out / "divergences.parquet").exists() and (out / "gate.md").read_text().startswith("# Gate")


def test_the_confusion_matrix_is_read_back_from_a_kfp_artifact():
    from kfp.dsl import ClassificationMetrics

    from components.gate.core import confusion_from_metadata

    artifact = ClassificationMetrics(name="classification", uri="/tmp/unused")
    artifact.log_confusion_matrix(["billing", "refund"], [[3, 1], [0, 2]])
    assert confusion_from_metadata(artifact.metadata) == (["billing", "refund"], [[3, 1], [0, 2]])
    assert confusion_from_metadata({}) is None  # not a classification task


def test_answers_cut_off_by_max_new_tokens_are_counted_and_reported(tmp_path, tiny_model, canonical_table):
    """A constrained answer that max_new_tokens ends is an unfinished document: invalid JSON, counted in
    cut_off, named in the row's error and warned about at the top of the report."""
    import pyarrow.parquet as pq

    from components.evaluate.core import evaluate

    schema = json.loads((Path(__file__).parents[2] / "examples/travel/schema.json").read_text())
    task = TaskSpec("structured", schema, [])
    preds = tmp_path / "p.parquet"
    result = evaluate(
        "tiny://travel",
        canonical_table,
        "sys",
        task,
        preds,
        max_new_tokens=4,
        max_examples=6,
        decoding="constrained",
    )
    assert result.metrics["cut_off"] == 1.0 and result.metrics["json_validity"] == 0.0
    table = pq.read_table(preds).to_pylist()
    assert all(
        r["score/cut_off"] == 1.0 and r["error"].startswith("cut off at max_new_tokens=4") for r in table
    )
    candidate = Evaluated.load("candidate", result.metrics, preds, result.settings)
    page = render_html(
        title="t",
        task_type="structured",
        candidate=candidate,
        baselines=[],
        verdicts=[],
        passed=None,
        divergence_rows=[],
    )
    assert "6 answers (100.0%) were cut off at max_new_tokens 4" in page
    # a generous budget: nothing is cut off, and the report says nothing about it
    roomy = evaluate(
        "tiny://travel",
        canonical_table,
        "sys",
        task,
        tmp_path / "q.parquet",
        max_new_tokens=200,
        max_examples=6,
        decoding="constrained",
    )
    assert roomy.metrics["cut_off"] < 1.0
