"""``submit CONFIG --kfp-host URL`` and ``slmforge runs list|compare --kfp-host URL`` through the real CLI and
the real ``kfp.Client``, against a loopback stand-in of the Kubeflow Pipelines v2 REST API
(tests/loopback_kfp.py, which records every request) and Cloud Storage (``gcp-storage-emulator``, for the
staged data). Nothing is patched."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from loopback_kfp import LoopbackKFP
from typer.testing import CliRunner

from components.common.config import config_hash
from components.common.config_load import load_config

REPO = Path(__file__).resolve().parents[2]
TRAVEL = REPO / "examples" / "travel"
UNSCHEDULABLE = (
    "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient "
    "nvidia.com/gpu. preemption: 0/3 nodes are available"
)


@pytest.fixture()
def bucket(gcs_emulator, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    client = storage.Client(project="test-project", credentials=AnonymousCredentials())
    return client.create_bucket(f"kfp-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Path:
    from pipelines.compiler import compile_all

    out = tmp_path_factory.mktemp("kfp")
    compile_all(out, target="kfp")
    return out


def _config(tmp_path: Path, bucket: str, *overrides: str) -> Path:
    """The travel demo config (local data: staged to the pipeline root) for a KFP backend."""
    raw = yaml.safe_load((TRAVEL / "config.yaml").read_text())
    raw["data"]["train"] = str(TRAVEL / raw["data"]["train"])
    raw["task"]["schema"] = str(TRAVEL / raw["task"]["schema"])
    raw["vertex"].update(project="test-project", pipeline_root=f"gs://{bucket}/kfp-root")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _cli(*args: str):
    from pipelines.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"}, catch_exceptions=False)


def test_submit_uploads_the_pipeline_and_runs_it_in_the_experiment(tmp_path, bucket, templates):
    """The compiled kfp template is uploaded as pipeline slmforge-finetune with a version named by its
    content, the run is created in the config's experiment with every parameter of the template (the
    config's, flattened as for Vertex; local data staged to the pipeline root), `--wait` follows it to the
    end. A second submit reuses the pipeline, the version and the experiment. The client sends no token to
    a loopback host."""
    config = _config(tmp_path, bucket.name)
    template = templates / "finetune.yaml"
    with LoopbackKFP() as kfp:
        args = ("submit", config, "--kfp-host", kfp.url, "--template", template, "--wait", "--poll-s", "0")
        result = _cli(*args)
        assert result.exit_code == 0, result.output
        (pipeline,) = kfp.pipelines.values()
        assert pipeline["display_name"] == "slmforge-finetune"
        # KFP gives every uploaded pipeline a first version; the run's is the one named by the content
        first, version = kfp.versions.values()
        assert first["display_name"] == "slmforge-finetune"
        assert version["display_name"].startswith("slmforge-finetune-") and len(version["display_name"]) == 34
        spec, platform = yaml.safe_load_all(template.read_text())
        assert version["pipeline_spec"] == spec and version["platform_spec"] == platform
        (experiment,) = kfp.experiments.values()
        assert experiment["display_name"] == "travel-commands"
        (run,) = [r.resource for r in kfp.runs.values()]
        assert run["experiment_id"] == experiment["experiment_id"]
        assert run["pipeline_version_reference"] == {
            "pipeline_id": pipeline["pipeline_id"],
            "pipeline_version_id": version["pipeline_version_id"],
        }
        values = run["runtime_config"]["parameters"]
        declared = version["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]
        assert set(values) == set(declared)
        cfg = load_config(config)
        assert values["config_hash"] == config_hash(cfg) and values["accelerator_count"] == 1
        assert json.loads(values["gpu_node_selector"])["cloud.google.com/gke-accelerator"] == "nvidia-l4"
        assert values["train_data"].startswith(f"gs://{bucket.name}/kfp-root/slmforge-data/")
        assert run["runtime_config"]["pipeline_root"] == f"gs://{bucket.name}/kfp-root"
        staged = values["train_data"].removeprefix(f"gs://{bucket.name}/")
        assert bucket.blob(staged).download_as_bytes() == (TRAVEL / "data" / "travel.jsonl").read_bytes()
        assert f"submitted: {kfp.url}/#/runs/details/{run['run_id']}" in result.output
        states = [line.split()[-1] for line in result.output.splitlines() if line[:2].isdigit()]
        assert states == ["PENDING", "RUNNING", "SUCCEEDED"]
        assert not [r for r in kfp.requests if "Authorization" in r.headers]

        again = _cli("submit", config, "--kfp-host", kfp.url, "--template", template)
        assert again.exit_code == 0, again.output
        assert len(kfp.pipelines) == 1 and len(kfp.versions) == 2 and len(kfp.experiments) == 1
        assert len(kfp.runs) == 2

        listed = _cli("runs", "list", "--kfp-host", kfp.url, "--config", config)
        assert listed.exit_code == 0, listed.output
        assert "2 runs in" in listed.output and "SUCCEEDED" in listed.output
        ids = list(kfp.runs)
        compared = _cli("runs", "compare", *ids, "--kfp-host", kfp.url, "--config", config)
        assert compared.exit_code == 0, compared.output
        assert "gpu_node_selector" in compared.output


def test_a_gpu_step_that_cannot_be_scheduled_says_what_it_asked_for(tmp_path, bucket, templates):
    tasks = [{"display_name": "train-op", "state": "FAILED", "error": {"message": UNSCHEDULABLE}}]
    script = ["RUNNING", ("RUNNING", tasks, None), ("FAILED", tasks, "the run failed: train-op failed")]
    config = _config(tmp_path, bucket.name)
    with LoopbackKFP(run_script=script) as kfp:
        args = ("--kfp-host", kfp.url, "--template", templates / "finetune.yaml", "--wait", "--poll-s", "0")
        result = _cli("submit", config, *args)
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert "train-op: no node can take the pod" in out
    assert (
        '"cloud.google.com/gke-accelerator": "nvidia-l4"' in out
        and "nvidia.com/gpu=present:NoSchedule" in out
    )
    assert (
        "gpu_accelerator_type" in out and out.count("no node can take the pod") == 2
    )  # while running, at the end


def test_bad_input_is_refused_before_anything_is_sent(tmp_path, bucket, templates):
    config = _config(tmp_path, bucket.name)
    with LoopbackKFP() as kfp:
        vertex_template = tmp_path / "vertex"
        from pipelines.compiler import compile_all

        compile_all(vertex_template)
        result = _cli(
            "submit", config, "--kfp-host", kfp.url, "--template", vertex_template / "finetune.yaml"
        )
        assert result.exit_code == 2 and "compile.py --target kfp" in " ".join(result.output.split())
        multinode = _cli("submit", config, "--kfp-host", kfp.url, "--set", "train.nodes=2")
        assert multinode.exit_code == 2 and "Vertex AI CustomJob" in multinode.output
        missing = _cli("submit", config, "--kfp-host", kfp.url, "--template", tmp_path / "none.yaml")
        assert missing.exit_code == 2 and "--target kfp" in missing.output
        dry = _cli(
            "submit", config, "--kfp-host", kfp.url, "--template", templates / "finetune.yaml", "--dry-run"
        )
        assert dry.exit_code == 0 and '"pipeline_name": "slmforge-finetune"' in dry.output
        no_root = _cli(
            "submit",
            config,
            "--kfp-host",
            kfp.url,
            "--template",
            templates / "finetune.yaml",
            "--set",
            "vertex.pipeline_root=''",
            "--dry-run",
        )
        assert no_root.exit_code == 2 and "train_data is a file on this machine" in " ".join(
            no_root.output.split()
        )
        assert kfp.requests == []  # nothing was sent


def test_an_https_host_needs_google_credentials(tmp_path, bucket, templates, monkeypatch):
    """An https:// host is signed in to with a Google ID token from Application Default Credentials; with
    none the command says how to get them (and never reads a token from the config)."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    config = _config(tmp_path, bucket.name)
    result = _cli(
        "submit", config, "--kfp-host", "https://kfp.example.com", "--template", templates / "finetune.yaml"
    )
    assert result.exit_code == 2, result.output
    assert "no Google credentials to sign in to https://kfp.example.com" in " ".join(result.output.split())
