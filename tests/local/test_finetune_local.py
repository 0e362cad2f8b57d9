"""The real finetune pipeline through kfp.local (SubprocessRunner), on the tiny model, offline.

`make test` runs the demo config end to end on a shortened recipe (config overrides, the way a user
shortens a run: `--set train.max_steps=...`), checking the wiring: every stage, the gate, export,
registration and lineage. The demo's quality check, the shipped config unchanged, is marked slow (several
minutes of training): `make test-slow` and the scheduled quality workflow run it. The CLI tests drive the
real command line the way a user does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "travel" / "config.yaml"

pytestmark = [pytest.mark.local]

# The demo, shortened: a few hundred steps on fewer held-out rows, and a gate that such a short run can pass
# (not worse than the untrained base), so that export, registration and lineage run too.
SHORT = (
    "train.max_steps=300",
    "train.checkpoint_steps=100",
    "data.split.validation_fraction=0.05",  # the slice and the validation loss, wired end to end
    "train.eval_steps=100",
    "eval.max_examples=48",
    "gates.rules=[{metric: exact_match, not_worse_than: base}]",
)


def travel_teacher(path: str, body: dict) -> tuple[int, dict]:
    """An OpenAI-compatible teacher for the demo's rows: three rewrites of the message, the state line
    (if any) kept as it is. The travel oracle decides which keep their label."""
    text = body["messages"][-1]["content"].split("User message:\n", 1)[-1]
    head, sep, message = text.partition("\n") if text.startswith("[state] ") else ("", "", text)
    rewrites = [f"{head}{sep}{m}" for m in (f"please, {message}", f"{message}, thank you", f"hi! {message}")]
    reply = {"role": "assistant", "content": json.dumps({"paraphrases": rewrites})}
    usage = {"prompt_tokens": 60, "completion_tokens": 40}
    return 200, {"choices": [{"message": reply, "finish_reason": "stop"}], "usage": usage}


def _client(home: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.mark.slow
def test_demo_recipe_passes_its_gate_with_margin(tmp_path, monkeypatch, travel_config):
    """The shipped demo config, unchanged: on the held-out rows the candidate reaches exact_match >= 0.95
    and schema_validity 1.0 (constrained, with free decoding beside it), the gate passes on every rule and
    the version is registered with alias candidate."""
    from pipelines.local import run_pipeline_local
    from pipelines.parameters import pipeline_parameters

    home = tmp_path / "home"
    monkeypatch.setenv("SLMFORGE_HOME", str(home))
    run = run_pipeline_local(pipeline_parameters(travel_config), tmp_path / "runs")
    cand, base = run.candidate_metrics, run.base_metrics
    assert cand["examples"] > 250
    assert cand["exact_match"] >= 0.95, cand
    assert cand["constrained/exact_match"] >= cand["free/exact_match"], cand
    assert cand["schema_validity"] == cand["constrained/schema_validity"] == 1.0, cand
    assert base["free/exact_match"] <= 0.01 and base["free/schema_validity"] <= 0.01, base
    assert run.gate_passed, run.gate_reasons
    reasons = run.gate_reasons.splitlines()
    assert reasons[0].startswith("PASS exact_match") and reasons[1].startswith("PASS schema_validity")
    assert reasons[4].startswith("SKIPPED exact_match not worse than champion")
    assert run.registered is not None and run.registered["created"]
    mv = _client(home).get_model_version_by_alias("travel-commands", "candidate")
    assert f"models:/travel-commands/{mv.version}" == run.registered["model_uri"]
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["gate"]["passed"] and summary["candidate"]["exact_match"] == cand["exact_match"]


def test_demo_config_end_to_end(tmp_path, monkeypatch):
    """The demo config on a shortened recipe, with teacher augmentation on (an OpenAI-compatible teacher on
    loopback, the travel oracle as validator): every stage runs; only training rows are paraphrased; the
    gate decides; export re-evaluates the merged weights; an MLflow model version with alias candidate,
    lineage tags and a model card; and a summary.json with the run's metrics, versions and lock hash."""
    from loopback_vertex import LoopbackJSON

    from components.common.config_load import load_config
    from components.common.provenance import lock_sha256
    from pipelines.local import run_pipeline_local
    from pipelines.parameters import pipeline_parameters

    home = tmp_path / "home"
    monkeypatch.setenv("SLMFORGE_HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    teacher = LoopbackJSON(travel_teacher)
    augment = (
        "data.augment.enabled=true",
        "data.augment.n=3",
        "data.augment.teacher.backend=openai",
        "data.augment.teacher.model=gpt-4o-mini",
        f"data.augment.teacher.endpoint={teacher.url}",
        "data.augment.oracle=examples.travel.travel:label_row",
    )
    params = pipeline_parameters(load_config(DEMO, (*SHORT, *augment)))
    assert params["max_steps"] == 300 and params["eval_max_examples"] == 48
    try:
        run = run_pipeline_local(params, tmp_path / "runs")
    finally:
        teacher.close()

    cand, base = run.candidate_metrics, run.base_metrics
    split_out = json.loads((run.run_dir / "split-op" / "executor_output.json").read_text())["artifacts"]
    assert split_out["eval_data"]["artifacts"][0]["metadata"]["rows"] > 250
    assert split_out["validation_data"]["artifacts"][0]["metadata"]["rows"] > 100
    train_out = json.loads((run.run_dir / "train-op" / "executor_output.json").read_text())["artifacts"]
    trained = train_out["metrics"]["artifacts"][0]["metadata"]
    assert 0 < trained["best_eval_loss"] <= trained["final_eval_loss"]
    assert cand["examples"] == base["examples"] == 48
    assert {"constrained/exact_match", "free/exact_match", "schema_validity"} <= set(cand)
    assert base["free/exact_match"] <= 0.01 and base["free/schema_validity"] <= 0.01, base
    assert run.gate_passed, run.gate_reasons
    assert run.gate_reasons.startswith("PASS exact_match not worse than base")
    page = (run.run_dir / "report.html").read_text()  # the gate's HTML artifact, named for a browser
    for column in ("candidate − base", "CI"):
        assert column in page
    assert set(run.baselines) == {"base", "retrieval"} and run.baselines["base"] == base  # no champion yet

    assert run.registered is not None and run.registered["created"]
    client = _client(home)
    mv = client.get_model_version_by_alias("travel-commands", "candidate")
    assert f"models:/travel-commands/{mv.version}" == run.registered["model_uri"]
    # augment: every training row kept, paraphrases added (none of an eval row), the card extended
    aug_out = json.loads((run.run_dir / "augment-op" / "executor_output.json").read_text())["artifacts"]
    augmented = aug_out["augmented"]["artifacts"][0]["metadata"]
    split_train = split_out["train_data"]["artifacts"][0]["metadata"]
    assert augmented["rows_added"] > 0 and augmented["rows"] == split_train["rows"] + augmented["rows_added"]
    assert augmented["upstream"] == {"train": split_train["sha256"]}
    assert len(teacher.requests) == len({r[1]["messages"][-1]["content"] for r in teacher.requests})
    manifest = json.loads((run.run_dir / "augment-op" / "card" / "manifest.json").read_text())
    assert manifest["augment"]["added"] == augmented["rows_added"]
    train_sha = augmented["sha256"]  # what was trained on, and what the registry records
    assert mv.tags["data_sha256"] == train_sha
    assert mv.tags["config_hash"] == params["config_hash"]
    assert mv.tags["pipeline_run"] == run.run_dir.name
    assert mv.tags["base_model"] == "tiny://travel"
    assert mv.tags["gate_passed"] == "true" and mv.tags["gate_failed_rules"] == "[]"
    run_metrics = client.get_run(mv.run_id).data.metrics  # the exported model's evaluation
    assert run_metrics["exact_match"] == pytest.approx(cand["exact_match"])

    # export: safetensors + card + lineage, evaluated again, parity within tolerance, registered as is
    exported = json.loads((run.run_dir / "export-op" / "executor_output.json").read_text())["artifacts"]
    meta = exported["exported"]["artifacts"][0]["metadata"]
    assert meta["parity"] and all(r["ok"] for r in meta["parity"]), meta["parity"]
    assert mv.tags["weights_sha256"] == meta["weights_sha256"]
    assert mv.tags["lineage.split_train"] == train_sha and mv.tags["lineage.merged"] == meta["weights_sha256"]
    folder = run.run_dir / "export-op" / "exported"
    assert {"model.safetensors", "MODEL_CARD.md", "lineage.json"} <= {p.name for p in folder.iterdir()}
    card = (folder / "MODEL_CARD.md").read_text()
    assert "candidate − base" in card and "## Export parity" in card and "## Lineage" in card

    # the summary the README's figures are rendered from
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["candidate"] == cand and summary["gate"]["passed"]
    assert summary["registered"] == run.registered["model_uri"]
    assert summary["environment"]["lock_sha256"] == lock_sha256() != ""
    assert summary["environment"]["versions"]["transformers"]


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SLMFORGE_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _wait_for_checkpoint(runs_root: Path, proc: subprocess.Popen, timeout: float = 600.0) -> Path:
    """The first complete train checkpoint of the run ``proc`` writes under ``runs_root``."""
    from components.train.checkpoints import latest_complete

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for folder in runs_root.glob("*/*/train-op/checkpoints"):
            if latest_complete(folder) is not None:
                return folder
        assert proc.poll() is None, "the run ended before its first checkpoint: " + proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError(f"no complete checkpoint under {runs_root} within {timeout} s")


def test_cli_run_stopped_by_sigterm_resumes_with_resume(tmp_path):
    """`slmforge run` stopped by SIGTERM during training leaves a checkpoint; `--resume RUN` continues from
    it (another config's resume is refused with the rule). The resumed run's 8 new tokens cannot hold a
    travel answer (preflight is told to warn, not stop): the gate fails and register is skipped."""
    from components.train.checkpoints import checkpoint_step, latest_complete

    home = tmp_path / "home"
    sets = ["train.max_steps=60", "train.checkpoint_steps=10", "eval.max_examples=16"]
    sets += ["eval.max_new_tokens=8", "preflight.strict=false"]
    args = ["run", str(DEMO), "--local", *(a for s in sets for a in ("--set", s))]
    env = {**os.environ, "SLMFORGE_HOME": str(home), "COLUMNS": "200"}
    first = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        checkpoints = _wait_for_checkpoint(home / "runs", first)
        os.killpg(first.pid, signal.SIGTERM)  # the terminal's process group: the CLI and the train step
        first.wait(timeout=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the train step saves its checkpoint, then exits 143
            try:
                os.killpg(first.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    step = checkpoint_step(latest_complete(checkpoints))
    run = checkpoints.parents[2].name
    assert step and step < 60

    other = _cli(*args, "--set", "train.learning_rate=0.001", "--resume", run, home=home)
    assert other.returncode == 2 and "[RESUME-001] --resume " + run in other.stdout, other.stdout
    missing = _cli(*args, "--resume", "no-such-run", home=home)
    assert missing.returncode == 2 and "[RESUME-002] --resume no-such-run" in missing.stdout

    resumed = _cli(*args, "--resume", run, home=home)
    assert resumed.returncode == 3, resumed.stdout + resumed.stderr  # ran to the end; 8 tokens fail the gate
    assert f"resuming run {run}: training continues from its checkpoint at step {step}" in resumed.stdout
    logs = sorted((home / "runs").glob("*/pipeline.log"))
    assert len(logs) == 2 and f"resuming from step {step}" in logs[-1].read_text()
    out = resumed.stdout
    assert "60 steps" in out and "✓ train-op" in out and "✓ gate-op" in out
    assert "gate: FAILED" in out
    assert "base (untrained)" in out and "retrieval" in out  # every baseline in the table
    assert "report.html" in out
    assert "FAIL exact_match = 0.0000 (needs >= 0.9)" in out
    assert "not registered: the gate did not pass" in out
    assert "register-op" not in out and "export-op" not in out
    run_dir = next((home / "runs").glob("*/slmforge-finetune-*/summary.json")).parent
    assert not (run_dir / "register-op").exists()
    assert (run_dir / "gate-op" / "report").read_text().startswith("# Gate: FAILED")
    assert not json.loads((run_dir / "summary.json").read_text())["gate"]["passed"]


def test_cli_bad_override_names_the_rule(tmp_path):
    out = _cli("run", str(DEMO), "--local", "--set", "train.max_stepz=3", home=tmp_path / "home")
    assert out.returncode == 2
    assert "[CFG-002] train.max_stepz" in out.stdout
    out = _cli("validate", str(DEMO), "--set", "train", home=tmp_path / "home")
    assert out.returncode == 2 and "[CFG-005] train: expected SECTION.FIELD=VALUE" in out.stdout


def _demo_raw() -> dict:
    """The demo config as a mapping, its relative paths made absolute (so it can be written elsewhere)."""
    raw = yaml.safe_load(DEMO.read_text())
    raw["data"]["train"] = str(DEMO.parent / raw["data"]["train"])
    raw["task"]["schema"] = str(DEMO.parent / raw["task"]["schema"])
    return raw


def test_cli_invalid_config_names_the_rule(tmp_path):
    raw = _demo_raw()
    raw["data"]["split"]["eval_fraction"] = 0.9
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = _cli("run", str(config), "--local", home=tmp_path / "home")
    assert out.returncode == 2
    assert "[DATA-003] data.split.eval_fraction: eval_fraction=0.9 is outside (0, 0.5]" in out.stdout
    assert not (tmp_path / "home" / "runs").exists()


def test_cli_run_without_local_points_to_submit(tmp_path):
    out = _cli("run", str(DEMO), home=tmp_path / "home")
    assert out.returncode == 2 and "submit CONFIG" in out.stdout


def _chat(rows: list[dict], with_history: bool) -> list[dict]:
    """Travel rows as OpenAI-style conversations; every third one carries an earlier exchange."""
    out = []
    for i, r in enumerate(rows):
        turns = [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]
        if with_history and i % 3 == 0:
            prev = rows[i - 1]
            turns = [
                {"role": "user", "content": prev["prompt"]},
                {"role": "assistant", "content": prev["completion"]},
                *turns,
            ]
        out.append({"id": r["id"], "group": r["group"], "messages": turns})
    return out


def test_chat_data_with_an_explicit_eval_set_flows_through_train_and_evaluate(
    tmp_path, monkeypatch, travel_rows
):
    """messages-shaped data (detected, not configured), multi-turn rows, an explicit eval locator: the
    pipeline trains and evaluates on the chat template and the card says where eval came from."""
    from components.common.config_load import parse_config
    from components.common.tables import read_rows
    from pipelines.local import run_pipeline_local
    from pipelines.parameters import pipeline_parameters

    for name, rows in (("train", travel_rows[:600]), ("eval", travel_rows[2900:2960])):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(c) for c in _chat(rows, True)) + "\n")
    raw = _demo_raw()
    raw["data"] = {
        "train": str(tmp_path / "train.jsonl"),
        "eval": str(tmp_path / "eval.jsonl"),
        "max_reject_rate": 0.05,
    }
    raw["train"].update(max_steps=30)
    raw["eval"].update(max_examples=24, max_new_tokens=16)
    raw["preflight"] = {"strict": False}  # 16 new tokens cannot hold a travel answer: warn, do not stop
    raw["gates"]["rules"] = []
    monkeypatch.setenv("SLMFORGE_HOME", str(tmp_path / "home"))
    run = run_pipeline_local(pipeline_parameters(parse_config(raw)), tmp_path / "runs")

    ingest = json.loads((run.run_dir / "ingest-op" / "executor_output.json").read_text())["artifacts"]
    assert ingest["dataset"]["artifacts"][0]["metadata"]["shape"] == "messages"
    manifest = json.loads((run.run_dir / "split-op" / "card" / "manifest.json").read_text())
    assert manifest["split"]["explicit_eval"] and manifest["rows"]["accounted"]
    assert [s["source"] for s in manifest["sources"]] == ["eval", "train"]
    held = read_rows(run.run_dir / "split-op" / "eval_data")
    assert {r["source"] for r in held} == {"eval"} and any(r["history"] != "[]" for r in held)
    assert run.candidate_metrics["examples"] == run.base_metrics["examples"] == 24
    assert run.gate_passed and run.registered is not None


def test_cli_stops_at_ingest_when_too_many_rows_are_rejected(tmp_path, travel_rows):
    lines = [json.dumps(r) for r in travel_rows[:200]] + ["{not json"] * 5
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    raw = _demo_raw()
    raw["data"]["train"] = str(tmp_path / "d.jsonl")
    raw["data"]["max_reject_rate"] = 0.01
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = _cli("run", str(config), "--local", home=tmp_path / "home")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "✗ ingest-op" in out.stdout and "train-op" not in out.stdout
    assert (
        "5 of 205 rows rejected (2.44% > data.max_reject_rate 1.00%); dominant reasons: NOT_JSON 5"
        in out.stdout
    )
    rejects = next((tmp_path / "home" / "runs").glob("*/slmforge-finetune-*/ingest-op/rejects"))
    assert len(rejects.read_text().splitlines()) == 5  # written before the stage failed
