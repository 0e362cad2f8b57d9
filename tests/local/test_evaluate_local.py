"""The evaluate-only pipeline through kfp.local (SubprocessRunner), offline: a model registered in the embedded
MLflow registry is fetched by ``models:/NAME@ALIAS`` and scored against the baselines, and the gate decides.

The "registered model" is the untrained tiny base itself, so its scores must equal the base baseline's on
the same rows: a check that the fetched model is the registered one and that both were scored alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAVEL = REPO / "examples" / "travel"

pytestmark = [pytest.mark.local]


def test_evaluate_pipeline_scores_a_registered_model(tmp_path, monkeypatch, tiny_model, travel_config):
    from components.common.provenance import sha256_path
    from components.register.backends import NewVersion
    from components.register.core import registry_from_spec
    from pipelines.evaluate import evaluate_parameters
    from pipelines.local import run_pipeline_local
    from pipelines.parameters import pipeline_parameters

    monkeypatch.setenv("SLMFORGE_HOME", str(tmp_path / "home"))  # a fresh embedded registry for this run
    registry = registry_from_spec({"backend": "mlflow", "tracking_uri": ""})
    version, created = registry.register(tiny_model, NewVersion("travel-commands", sha256_path(tiny_model)))
    assert created
    registry.set_alias("travel-commands", "candidate", version.version)

    rows = (TRAVEL / "data" / "travel.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    data = tmp_path / "travel.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    params = pipeline_parameters(travel_config)
    params.update(train_data=str(data), eval_max_examples=16, eval_decoding="free", max_reject_rate=0.5)
    run = run_pipeline_local(
        evaluate_parameters(params, "models:/travel-commands@candidate"),
        tmp_path / "runs",
        pipeline="evaluate",
    )

    fetched = json.loads((run.run_dir / "fetch-model-op" / "executor_output.json").read_text())
    (model,) = fetched["artifacts"]["model"]["artifacts"]
    assert model["metadata"]["resolved"] == f"models:/travel-commands/{version.version}"
    assert model["metadata"]["sha256"] == sha256_path(tiny_model)  # the registered weights, byte for byte

    cand, base = run.candidate_metrics, run.base_metrics
    assert cand["examples"] == base["examples"] == 16
    assert {k: v for k, v in cand.items() if k != "generation_s"} == {
        k: v for k, v in base.items() if k != "generation_s"
    }
    assert not run.gate_passed  # an untrained model: exact_match 0 < 0.9
    assert run.gate_reasons.splitlines()[0] == "FAIL exact_match = 0.0000 (needs >= 0.9)"
    assert run.registered is None and not (run.run_dir / "register-op").exists()
    assert "candidate" in (run.run_dir / "gate-op" / "html_report").read_text()
