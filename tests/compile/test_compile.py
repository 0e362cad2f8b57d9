"""The compiled YAML is the only place where Vertex-only settings (images, accelerators, retries,
caching, conditions) can be checked: kfp.local ignores them. Assert on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.version import __version__

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, dict]:
    from pipelines.compiler import compile_all

    paths = compile_all(tmp_path_factory.mktemp("compiled"))
    assert sorted(p.name for p in paths) == ["finetune-multinode.yaml", "finetune.yaml"]
    return {p.stem: yaml.safe_load(p.read_text()) for p in paths}


@pytest.fixture(scope="module")
def spec(compiled) -> dict:
    return compiled["finetune"]


@pytest.fixture(scope="module")
def multinode(compiled) -> dict:
    return compiled["finetune-multinode"]


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

    names = set()
    for path in compile_all(tmp_path):
        message = json_format.ParseDict(yaml.safe_load(path.read_text()), pipeline_spec_pb2.PipelineSpec())
        names.add(message.pipeline_info.name)
        assert "gate-op" in message.root.dag.tasks
    assert names == {"slmforge-finetune", "slmforge-finetune-multinode"}


def test_every_stage_is_a_task(spec):
    assert set(_tasks(spec)) == {
        "ingest-op",
        "clean-op",
        "split-op",
        "preflight-op",
        "train-op",
        "evaluate-op",
        "evaluate-base-op",
        "evaluate-champion-op",
        "retrieval-baseline-op",
        "gate-op",
        "condition-1",
        "register-op",
    }


def test_images(spec):
    tasks = _tasks(spec)
    for name in ("train-op", "evaluate-op", "evaluate-base-op", "evaluate-champion-op"):
        assert _executor(spec, tasks[name])["image"] == f"slmforge/trainer:{__version__}"
    for name in ("ingest-op", "clean-op", "split-op", "gate-op", "register-op", "retrieval-baseline-op"):
        assert _executor(spec, tasks[name])["image"] == f"slmforge/cpu:{__version__}"


def test_accelerators_come_from_parameters(spec):
    tasks = _tasks(spec)
    for name in ("train-op", "evaluate-op", "evaluate-base-op", "evaluate-champion-op"):
        accel = _executor(spec, tasks[name])["resources"]["accelerator"]
        assert accel["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
        assert accel["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}"
        assert tasks[name]["inputs"]["parameters"]["pipelinechannel--accelerator_type"] == {
            "componentInputParameter": "accelerator_type"
        }
    assert "accelerator" not in _executor(spec, tasks["ingest-op"]).get("resources", {})


def test_retry_policy(spec):
    tasks = _tasks(spec)
    for name in ("ingest-op", "clean-op", "split-op", "evaluate-op", "evaluate-base-op", "evaluate-champion-op",
                 "retrieval-baseline-op", "register-op"):  # fmt: skip
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

    path = next(p for p in compile_all(tmp_path, image_repo="us-docker.pkg.dev/p/r", image_tag="abc123")
                if p.name == "finetune-multinode.yaml")  # fmt: skip
    images = {
        e["container"]["image"]
        for e in yaml.safe_load(path.read_text())["deploymentSpec"]["executors"].values()
    }
    assert images == {"us-docker.pkg.dev/p/r/cpu:abc123", "us-docker.pkg.dev/p/r/trainer:abc123"}
    (launcher,) = (e["container"] for e in yaml.safe_load(path.read_text())["deploymentSpec"]["executors"].values()
                   if "--worker-container" in e["container"].get("args", []))  # fmt: skip
    worker = json.loads(launcher["args"][launcher["args"].index("--worker-container") + 1])
    assert worker["image_uri"] == "us-docker.pkg.dev/p/r/trainer:abc123"


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


def test_multi_node_training_is_a_vertex_custom_job(spec, multinode):
    """finetune-multinode: the train step is a CustomJob whose worker pools run the train container."""
    from components.train.custom_job import EXECUTOR_INPUT_MARKER, worker_pool_specs

    single_tasks, tasks = _tasks(spec), _tasks(multinode)
    assert set(tasks) == (set(single_tasks) - {"train-op"}) | {"train-op-custom-job"}
    task = tasks["train-op-custom-job"]
    assert task["taskInfo"]["name"] == "train-multi-node"
    assert task["retryPolicy"]["maxRetryCount"] == 3
    params = task["inputs"]["parameters"]
    assert params["replica_count"] == {"componentInputParameter": "train_nodes"}
    assert params["nodes"] == {"componentInputParameter": "train_nodes"}
    for name in ("accelerator_type", "accelerator_count", "machine_type"):
        assert params[name] == {"componentInputParameter": name}
    comp = multinode["components"]["comp-train-op-custom-job"]
    assert set(comp["outputDefinitions"]["artifacts"]) == {"model", "metrics", "loss_curve"}
    assert set(comp["outputDefinitions"]["parameters"]) == {"gcp_resources"}
    defaults = comp["inputDefinitions"]["parameters"]
    assert defaults["project"]["defaultValue"] == "{{$.pipeline_google_cloud_project_id}}"
    assert defaults["location"]["defaultValue"] == "{{$.pipeline_google_cloud_location}}"

    launcher = _executor(multinode, task)
    assert launcher["command"] == ["python3", "-m", "components.train.custom_job"]
    assert "accelerator" not in launcher.get("resources", {})  # the launcher only waits; replicas hold GPUs
    args = launcher["args"]
    assert args[args.index("--executor-input") + 1] == "{{$}}"
    assert args[args.index("--replica-count") + 1] == "{{$.inputs.parameters['replica_count']}}"
    worker = json.loads(args[args.index("--worker-container") + 1])
    single = _executor(
        spec, single_tasks["train-op"]
    )  # the replicas run exactly the one-node train container
    assert worker["image_uri"] == single["image"] == f"slmforge/trainer:{__version__}"
    assert worker["command"] == single["command"]
    assert worker["args"] == [EXECUTOR_INPUT_MARKER if a == "{{$}}" else a for a in single["args"]]

    pools = worker_pool_specs(worker, '{"inputs": {}}', replica_count=3, machine_type="",
                              accelerator_type="NVIDIA_A100_80GB", accelerator_count=8)  # fmt: skip
    assert [p["replica_count"] for p in pools] == [1, 2]  # chief + 2 workers
    assert pools[0]["machine_spec"] == {
        "machine_type": "a2-ultragpu-8g", "accelerator_type": "NVIDIA_A100_80GB", "accelerator_count": 8,
    }  # fmt: skip
    assert pools[1]["container_spec"]["args"][
        pools[1]["container_spec"]["args"].index("--executor_input") + 1
    ] == ('{"inputs": {}}')

    # evaluation takes the chief's model, the custom-job task's output
    model = tasks["evaluate-op"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
    assert model == {"outputArtifactKey": "model", "producerTask": "train-op-custom-job"}
