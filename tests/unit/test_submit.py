"""``submit CONFIG`` (== ``slmforge submit``) through the real CLI and the real google-cloud-aiplatform client,
against loopback stand-ins of the cloud: the Vertex AI REST API (tests/loopback_vertex.py, which records
every request as the client sent it) and Cloud Storage (``gcp-storage-emulator``, for the pipeline-root
bucket check and the staged data). ``$SLMFORGE_VERTEX_ENDPOINT`` points the CLI at the stand-in; nothing
is patched."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from loopback_vertex import LoopbackVertex
from typer.testing import CliRunner

from components.common.config import config_hash
from components.common.config_load import load_config, parse_config
from components.common.config_rules import ConfigError

REPO = Path(__file__).resolve().parents[2]
TRAVEL = REPO / "examples" / "travel"
PROJECT, REGION = "test-project", "us-central1"
SERVICE_ACCOUNT = "pipeline-runner@test-project.iam.gserviceaccount.com"
NETWORK = "projects/123456789/global/networks/ml-vpc"


@pytest.fixture()
def gcs(gcs_emulator, monkeypatch):
    """A storage client of the emulator; the CLI's own clients reach it through the env."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    return storage.Client(project=PROJECT, credentials=AnonymousCredentials())


@pytest.fixture()
def data_bucket(gcs):
    """A bucket holding the travel data (what a user uploads before submitting)."""
    bucket = gcs.create_bucket(f"data-{uuid.uuid4().hex[:12]}")
    bucket.blob("travel/travel.jsonl").upload_from_filename(str(TRAVEL / "data" / "travel.jsonl"))
    return bucket


@pytest.fixture()
def root_name(gcs) -> str:
    """The name of a pipeline-root bucket that does not exist yet: the SDK creates it on submit. (When
    it exists, the SDK checks its owner through the Resource Manager API, which no stand-in can answer:
    offline that check retries for 60 s before it gives up, logs and goes on.)"""
    return f"root-{uuid.uuid4().hex[:12]}"


@pytest.fixture()
def vertex(monkeypatch):
    with LoopbackVertex() as stand_in:
        monkeypatch.setenv("SLMFORGE_VERTEX_ENDPOINT", stand_in.endpoint)
        yield stand_in


def _config(tmp_path: Path, root: str, train: str = "", **vertex_settings) -> Path:
    """The travel demo config set up for Vertex: ``train`` data (default: the local file), absolute schema
    path, this test project's settings, pipeline root in bucket ``root``."""
    raw = yaml.safe_load((TRAVEL / "config.yaml").read_text())
    raw["data"]["train"] = train or str(TRAVEL / raw["data"]["train"])
    raw["task"]["schema"] = str(TRAVEL / raw["task"]["schema"])
    raw["vertex"].update(
        project=PROJECT,
        region=REGION,
        pipeline_root=f"gs://{root}/pipeline-root",
        service_account=SERVICE_ACCOUNT,
        network=NETWORK,
        labels={"team": "nlp", "cost-center": "ml-42"},
    )
    raw["vertex"].update(vertex_settings)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _submit(*args: str):
    from pipelines.cli import app

    return CliRunner().invoke(app, ["submit", *args], catch_exceptions=False)


def _creates(vertex: LoopbackVertex) -> list:
    return [r for r in vertex.requests if r.method == "POST" and r.path.endswith("/pipelineJobs")]


def _caching(spec: dict) -> dict[str, dict]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return {name: task.get("cachingOptions", {}) for name, task in tasks.items()}


def test_submit_creates_the_pipeline_job(tmp_path, gcs, data_bucket, root_name, vertex):
    train = f"gs://{data_bucket.name}/travel/travel.jsonl"
    config = _config(tmp_path, root_name, train)
    template = tmp_path / "build" / "finetune.yaml"
    result = _submit(str(config), "--compile", "--template", str(template))
    assert result.exit_code == 0, result.output
    assert template.is_file()

    (create,) = _creates(vertex)
    parent = f"projects/{PROJECT}/locations/{REGION}"
    assert create.path == f"/v1/{parent}/pipelineJobs"
    job_id = create.query["pipelineJobId"]
    body = create.body
    assert body["displayName"].startswith("travel-commands-")
    assert body["pipelineSpec"]["pipelineInfo"]["name"] == "slmforge-finetune"
    assert body["serviceAccount"] == SERVICE_ACCOUNT and body["network"] == NETWORK
    labels = body["labels"]
    cfg = load_config(config)
    assert labels["team"] == "nlp" and labels["cost-center"] == "ml-42"
    assert labels["slmforge-config"] == config_hash(cfg)[:16]
    assert re.fullmatch(r"[0-9a-f]{16}|unknown", labels["slmforge-git"]), labels

    runtime = body["runtimeConfig"]
    assert runtime["gcsOutputDirectory"] == f"gs://{root_name}/pipeline-root"
    assert gcs.lookup_bucket(root_name) is not None  # the SDK's pipeline-root check created it
    values = runtime["parameterValues"]
    declared = body["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
    assert set(values) == set(declared)  # every parameter explicit, so the console compares them all
    assert values["config_hash"] == config_hash(cfg) and values["base_model"] == "tiny://travel"
    assert values["max_steps"] == cfg.train.max_steps and values["experiment"] == "travel-commands"
    assert values["train_data"] == train  # already on gs://: nothing staged

    # caching as compiled: the gate and the champion's evaluation always run anew
    caching = _caching(body["pipelineSpec"])
    assert caching["train-op"] == {"enableCache": True}
    assert not caching["gate-op"].get("enableCache") and not caching["evaluate-champion-op"].get(
        "enableCache"
    )

    # the run joins the Vertex AI experiment: created (system.Experiment), the run's context added to it
    store = f"{parent}/metadataStores/default"
    (experiment,) = [r for r in vertex.requests if r.method == "POST" and r.path == f"/v1/{store}/contexts"]
    assert experiment.query["contextId"] == "travel-commands"
    assert experiment.body["schemaTitle"] == "system.Experiment"
    (link,) = [r for r in vertex.requests if r.path.endswith(":addContextChildren")]
    assert link.path == f"/v1/{store}/contexts/travel-commands:addContextChildren"
    assert link.body["childContexts"] == [f"{store}/contexts/{job_id}"]

    url = f"https://console.cloud.google.com/vertex-ai/locations/{REGION}/pipelines/runs/{job_id}?project={PROJECT}"
    assert f"submitted: {url}" in result.output
    assert "experiment: travel-commands" in result.output


def test_local_data_is_staged_to_the_pipeline_root_once(tmp_path, gcs, root_name):
    """``--dry-run`` plans the copy of a local data file (named by its content); ``upload_staged`` makes
    it, byte for byte, and a second upload of the same content writes nothing."""
    from pipelines.parameters import pipeline_parameters
    from pipelines.vertex import job_request, stage_local_data, upload_staged

    cfg = load_config(_config(tmp_path, root_name))
    (tmp_path / "build").mkdir()
    from pipelines.compiler import compile_all

    template = next(p for p in compile_all(tmp_path / "build") if p.name == "finetune.yaml")
    request = job_request(cfg, pipeline_parameters(cfg), template)
    (upload,) = request["uploads"]
    assert upload["from"] == str(TRAVEL / "data" / "travel.jsonl")
    staged = request["parameter_values"]["train_data"]
    assert staged == upload["to"]
    assert re.fullmatch(rf"gs://{root_name}/pipeline-root/slmforge-data/[0-9a-f]{{16}}/travel\.jsonl", staged)

    bucket = gcs.create_bucket(root_name)
    assert upload_staged(request["uploads"], PROJECT) == [staged]
    (blob,) = bucket.list_blobs()
    assert blob.download_as_bytes() == (TRAVEL / "data" / "travel.jsonl").read_bytes()
    assert upload_staged(request["uploads"], PROJECT) == []  # already there: not written again

    folder = tmp_path / "parts"  # a folder locator (parquet parts) is copied file by file
    folder.mkdir()
    for name in ("a.parquet", "b.parquet"):
        (folder / name).write_bytes(name.encode())
    params, uploads = stage_local_data(
        {"train_data": f"parquet:{folder}", "eval_data": "hf:org/set:test"}, f"gs://{root_name}/r"
    )
    assert params["train_data"].startswith(f"parquet:gs://{root_name}/r/slmforge-data/")
    assert params["eval_data"] == "hf:org/set:test"  # a hub dataset is read from the hub
    assert len(upload_staged(uploads, PROJECT)) == 2
    prefix = params["train_data"].removeprefix(f"parquet:gs://{root_name}/")
    assert sorted(b.name for b in bucket.list_blobs(prefix=prefix)) == [
        f"{prefix}/a.parquet",
        f"{prefix}/b.parquet",
    ]

    missing = [{"from": upload["from"], "to": f"gs://no-such-{uuid.uuid4().hex[:8]}/x.jsonl"}]
    with pytest.raises(ValueError, match=r"\[VTX-008\] bucket 'no-such-"):
        upload_staged(missing, PROJECT)


def test_wait_streams_each_state_change(tmp_path, data_bucket, root_name, vertex):
    vertex.pipelines.states = (
        ("PIPELINE_STATE_PENDING",) + ("PIPELINE_STATE_RUNNING",) * 4 + ("PIPELINE_STATE_SUCCEEDED",)
    )
    config = _config(tmp_path, root_name, f"gs://{data_bucket.name}/travel/travel.jsonl")
    template = tmp_path / "build" / "finetune.yaml"
    result = _submit(
        str(config), "--compile", "--template", str(template), "--wait", "--poll-s", "0.01", "--no-cache"
    )
    assert result.exit_code == 0, result.output
    states = re.findall(r"^\d\d:\d\d:\d\d (PIPELINE_STATE_\w+)$", result.output, flags=re.M)
    assert states == ["PIPELINE_STATE_RUNNING", "PIPELINE_STATE_SUCCEEDED"], result.output
    (create,) = _creates(vertex)
    gets = [r for r in vertex.requests if r.method == "GET" and "/pipelineJobs/" in r.path]
    assert len(gets) >= 5  # every state read is a get of the job
    # --no-cache: the SDK turns caching off on every task of the spec it sends
    assert set(map(json.dumps, _caching(create.body["pipelineSpec"]).values())) == {'{"enableCache": false}'}


def test_wait_exits_1_when_the_run_fails(tmp_path, data_bucket, root_name, vertex):
    vertex.pipelines.states = ("PIPELINE_STATE_PENDING", "PIPELINE_STATE_RUNNING", "PIPELINE_STATE_FAILED")
    vertex.pipelines.error = "The DAG failed because some tasks failed: train-op."
    train = f"gs://{data_bucket.name}/travel/travel.jsonl"
    config = _config(tmp_path, root_name, train, network="", labels={}, experiment="")
    template = tmp_path / "build" / "finetune.yaml"
    result = _submit(str(config), "--compile", "--template", str(template), "--wait", "--poll-s", "0.01")
    assert result.exit_code == 1, result.output
    assert "PIPELINE_STATE_FAILED: The DAG failed because some tasks failed: train-op." in result.output
    (create,) = _creates(vertex)
    assert "network" not in create.body  # not peered when vertex.network is empty
    assert set(create.body["labels"]) == {"slmforge-config", "slmforge-git"}
    # no vertex.experiment: the training runs' experiment (train.experiment, else the config name)
    assert "experiment: travel-commands" in result.output


def test_dry_run_prints_the_request_and_sends_nothing(tmp_path, gcs, root_name, vertex):
    """Through the ``submit`` console script (== ``slmforge submit``), in a subprocess."""
    script = Path(sys.executable).parent / "submit"
    if not script.is_file():
        pytest.skip("the submit console script is not installed (pip install -e .)")
    config = _config(tmp_path, root_name)
    template = tmp_path / "build" / "finetune.yaml"
    env = {**os.environ, "COLUMNS": "300"}
    out = subprocess.run(
        [str(script), str(config), "--compile", "--template", str(template), "--dry-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    compiled, _, printed = out.stdout.partition("{")  # --compile lists the YAML files first
    assert str(template) in compiled.splitlines()
    request = json.loads("{" + printed)
    assert request["network"] == NETWORK and request["service_account"] == SERVICE_ACCOUNT
    assert request["experiment"] == "travel-commands" and request["enable_caching"] is None
    assert request["labels"]["team"] == "nlp"
    (upload,) = request["uploads"]
    assert request["parameter_values"]["train_data"] == upload["to"]
    assert vertex.requests == [] and gcs.lookup_bucket(root_name) is None


def test_vertex_settings_are_checked(tmp_path, root_name, vertex):
    base = yaml.safe_load(_config(tmp_path, root_name).read_text())

    def rules(**settings) -> set[str]:
        raw = json.loads(json.dumps(base))
        raw["vertex"].update(settings)
        with pytest.raises(ConfigError) as err:
            parse_config(raw, tmp_path)
        return {rule for rule, _, _ in err.value.violations}

    assert rules(network="ml-vpc") == {"VTX-003"}
    assert rules(network="projects/my-project/global/networks/ml-vpc") == {"VTX-003"}  # a number, not an id
    assert rules(labels={"Team": "nlp"}) == {"VTX-004"}
    assert rules(labels={"team": "NLP"}) == {"VTX-004"}
    assert rules(labels={"slmforge-git": "abc"}) == {"VTX-004"}  # submit's own
    assert rules(labels={f"k{i}": "v" for i in range(63)}) == {"VTX-004"}

    template = tmp_path / "build" / "finetune.yaml"
    for settings, rule in [
        ({"project": ""}, "VTX-001"),
        ({"pipeline_root": "/local/root"}, "VTX-002"),
        ({"experiment": "Travel_Commands"}, "VTX-005"),
    ]:
        result = _submit(
            str(_config(tmp_path, root_name, **settings)), "--compile", "--template", str(template)
        )
        assert result.exit_code == 2 and f"[{rule}]" in result.output, (rule, result.output)
    local_base = tmp_path / "my-model"
    local_base.mkdir()
    raw = json.loads(json.dumps(base))
    raw["model"]["base"] = str(local_base)
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(raw))
    result = _submit(str(tmp_path / "local.yaml"), "--template", str(template))
    assert result.exit_code == 2 and "[VTX-007] base_model=" in result.output, result.output
    assert _creates(vertex) == []


def test_submit_the_evaluate_pipeline(tmp_path, data_bucket, root_name, vertex):
    """``--pipeline evaluate --model URI``: the config's parameters narrowed to the evaluate template's,
    plus the model to evaluate."""
    config = _config(tmp_path, root_name, f"gs://{data_bucket.name}/travel/travel.jsonl")
    template = tmp_path / "build" / "evaluate.yaml"
    assert (
        _submit(str(config), "--pipeline", "evaluate", "--template", str(template)).exit_code == 2
    )  # no --model
    result = _submit(
        str(config),
        "--compile",
        "--pipeline",
        "evaluate",
        "--model",
        "models:/travel-commands@champion",
        "--template",
        str(template),
    )
    assert result.exit_code == 0, result.output
    (create,) = _creates(vertex)
    assert create.body["pipelineSpec"]["pipelineInfo"]["name"] == "slmforge-evaluate"
    values = create.body["runtimeConfig"]["parameterValues"]
    assert values["model_uri"] == "models:/travel-commands@champion"
    assert set(values) == set(create.body["pipelineSpec"]["root"]["inputDefinitions"]["parameters"])
    assert "max_steps" not in values and "train_data" in values  # no training; the same data preparation
