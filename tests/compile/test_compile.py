"""The compiled YAML is the only place where Vertex-only settings (images, accelerators, retries,
caching, conditions) can be checked: kfp.local ignores them. Assert on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.version import __version__

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    from pipelines.compiler import compile_all

    out = tmp_path_factory.mktemp("compiled")
    (path,) = compile_all(out)
    assert path.name == "finetune.yaml"
    return yaml.safe_load(path.read_text())


def _tasks(spec: dict) -> dict:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def _executor(spec: dict, task: dict) -> dict:
    comp = spec["components"][task["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]


def test_yaml_loads_into_pipeline_spec_proto(tmp_path):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from pipelines.compiler import compile_all

    (path,) = compile_all(tmp_path)
    message = json_format.ParseDict(yaml.safe_load(path.read_text()), pipeline_spec_pb2.PipelineSpec())
    assert message.pipeline_info.name == "slmforge-finetune"
    assert "train-op" in message.root.dag.tasks


def test_every_stage_is_a_task(spec):
    assert set(_tasks(spec)) == {
        "ingest-op",
        "clean-op",
        "split-op",
        "preflight-op",
        "train-op",
        "evaluate-op",
        "evaluate-base-op",
        "gate-op",
        "condition-1",
        "register-op",
    }


def test_images(spec):
    tasks = _tasks(spec)
    for name in ("train-op", "evaluate-op", "evaluate-base-op"):
        assert _executor(spec, tasks[name])["image"] == f"slmforge/trainer:{__version__}"
    for name in ("ingest-op", "clean-op", "split-op", "gate-op", "register-op"):
        assert _executor(spec, tasks[name])["image"] == f"slmforge/cpu:{__version__}"


def test_accelerators_come_from_parameters(spec):
    tasks = _tasks(spec)
    for name in ("train-op", "evaluate-op", "evaluate-base-op"):
        accel = _executor(spec, tasks[name])["resources"]["accelerator"]
        assert accel["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
        assert accel["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}"
        assert tasks[name]["inputs"]["parameters"]["pipelinechannel--accelerator_type"] == {
            "componentInputParameter": "accelerator_type"
        }
    assert "accelerator" not in _executor(spec, tasks["ingest-op"]).get("resources", {})


def test_retry_policy(spec):
    tasks = _tasks(spec)
    for name in ("ingest-op", "clean-op", "split-op", "evaluate-op", "evaluate-base-op", "register-op"):
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == 2, name
        assert tasks[name]["retryPolicy"]["backoffDuration"] == "60s"
    # a preempted train step exits 143 after a checkpoint; its retries resume from it
    assert tasks["train-op"]["retryPolicy"]["maxRetryCount"] == 3
    assert "retryPolicy" not in tasks["preflight-op"] and "retryPolicy" not in tasks["gate-op"]


def test_preflight_runs_on_cpu_and_plans_the_train_batch(spec):
    tasks = _tasks(spec)
    assert _executor(spec, tasks["preflight-op"])["image"] == f"slmforge/cpu:{__version__}"
    assert "accelerator" not in _executor(spec, tasks["preflight-op"]).get("resources", {})
    grad_accum = tasks["train-op"]["inputs"]["parameters"]["grad_accum"]["taskOutputParameter"]
    assert grad_accum == {"outputParameterKey": "grad_accum", "producerTask": "preflight-op"}
    outputs = spec["components"]["comp-train-op"]["outputDefinitions"]["artifacts"]
    assert set(outputs) == {"model", "metrics", "loss_curve"}


def test_register_runs_only_when_the_gate_passes(spec):
    cond = spec["root"]["dag"]["tasks"]["condition-1"]
    assert "gate-op" in cond["dependentTasks"]
    assert cond["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--gate-op-Output'] == true"
    )
    assert _tasks(spec)["gate-op"]["cachingOptions"] == {}  # caching off: decide anew every run


def test_data_stages_chain_the_audit_stream(spec):
    tasks = _tasks(spec)
    clean_in = tasks["clean-op"]["inputs"]["artifacts"]
    split_in = tasks["split-op"]["inputs"]["artifacts"]
    assert clean_in["upstream_events"]["taskOutputArtifact"] == {
        "outputArtifactKey": "events",
        "producerTask": "ingest-op",
    }
    assert split_in["upstream_events"]["taskOutputArtifact"] == {
        "outputArtifactKey": "events",
        "producerTask": "clean-op",
    }
    assert split_in["dataset"]["taskOutputArtifact"] == {
        "outputArtifactKey": "cleaned",
        "producerTask": "clean-op",
    }
    outputs = spec["components"]["comp-split-op"]["outputDefinitions"]["artifacts"]
    assert outputs["summary"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert outputs["card"]["artifactType"]["schemaTitle"] == "system.Artifact"


def test_docstrings_become_descriptions(spec):
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert all(p.get("description") for p in params.values()), [
        k for k, p in params.items() if not p.get("description")
    ]
    train_inputs = spec["components"]["comp-train-op"]["inputDefinitions"]["parameters"]
    assert train_inputs["lora_r"]["description"] == "LoRA rank (method lora)."


def test_image_override(tmp_path):
    from pipelines.compiler import compile_all

    (path,) = compile_all(tmp_path, image_repo="us-docker.pkg.dev/p/r", image_tag="abc123")
    images = {
        e["container"]["image"]
        for e in yaml.safe_load(path.read_text())["deploymentSpec"]["executors"].values()
    }
    assert images == {"us-docker.pkg.dev/p/r/cpu:abc123", "us-docker.pkg.dev/p/r/trainer:abc123"}


def test_compile_py_does_not_import_the_ml_stack(tmp_path):
    code = (
        "import sys, runpy; sys.argv = ['compile.py', '--out', sys.argv[1]];"
        "\ntry: runpy.run_path('compile.py', run_name='__main__')\nexcept SystemExit: pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets', 'mlflow', "
        "'google.cloud.aiplatform', 'pyarrow') if m in sys.modules)\n"
        "assert not heavy, heavy"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "finetune.yaml").is_file()
