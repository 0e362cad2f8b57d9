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
    assert sorted(p.name for p in paths) == ["evaluate.yaml", "finetune-multinode.yaml", "finetune.yaml"]
    return {p.stem: yaml.safe_load(p.read_text()) for p in paths}


@pytest.fixture(scope="module")
def spec(compiled) -> dict:
    return compiled["finetune"]


@pytest.fixture(scope="module")
def multinode(compiled) -> dict:
    return compiled["finetune-multinode"]


@pytest.fixture(scope="module")
def evaluate(compiled) -> dict:
    return compiled["evaluate"]


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
    assert names == {"slmforge-finetune", "slmforge-finetune-multinode", "slmforge-evaluate"}


def test_every_stage_is_a_task(spec):
    assert set(_tasks(spec)) == {
        "ingest-op",
        "clean-op",
        "augment-op",
        "split-op",
        "preflight-op",
        "train-op",
        "evaluate-op",
        "evaluate-base-op",
        "evaluate-champion-op",
        "retrieval-baseline-op",
        "gate-op",
        "condition-1",
        "export-op",
        "register-op",
        "condition-2",  # deploy.after_register, inside the gate's branch
        "deploy-op",
    }


# Per task, in every pipeline: (image kind, runs a model on the accelerators, retries, cached). Retries:
# 2 with backoff on every non-training step against transient infra failures; train 3, each resuming from
# its newest checkpoint; preflight none: a strict preflight failure is the verdict itself, deterministic,
# and retries would only delay it by the backoff. Caching off where the answer changes between runs with
# the same inputs: the champion alias moves, a models:/NAME@ALIAS URI moves, the gate and registration
# act on the registry's state.
TASKS = {
    "ingest-op": ("cpu", False, 2, True),
    "clean-op": ("cpu", False, 2, True),
    "split-op": ("cpu", False, 2, True),
    "augment-op": ("cpu", False, 2, True),
    "preflight-op": ("cpu", False, 0, True),
    "train-op": ("trainer", True, 3, True),
    "train-op-custom-job": ("cpu", False, 3, True),  # the launcher waits; the job's replicas hold the GPUs
    "fetch-model-op": ("cpu", False, 2, False),
    "evaluate-op": ("trainer", True, 2, True),
    "evaluate-base-op": ("trainer", True, 2, True),
    "evaluate-champion-op": ("trainer", True, 2, False),
    "retrieval-baseline-op": ("cpu", False, 2, True),
    "gate-op": ("cpu", False, 2, False),
    "export-op": ("trainer", True, 2, True),
    "register-op": ("cpu", False, 2, False),
    "deploy-op": ("cpu", False, 0, False),  # a retry would deploy a second canary
}
TRAINING = {"train-op", "train-op-custom-job"}
LIMITED = {
    "train-op",
    "evaluate-op",
    "evaluate-base-op",
    "evaluate-champion-op",
    "export-op",
}  # CPU and memory limits


@pytest.mark.parametrize("name", ["finetune", "finetune-multinode", "evaluate"])
def test_every_task_image_resources_retries_and_caching(compiled, name):
    spec = compiled[name]
    tasks = {
        k: t
        for k, t in _tasks(spec).items()
        if "executorLabel" in spec["components"][t["componentRef"]["name"]]
    }
    assert set(tasks) <= set(TASKS), set(tasks) - set(TASKS)
    for task_name, task in tasks.items():
        kind, on_gpu, retries, cached = TASKS[task_name]
        container = _executor(spec, task)
        assert container["image"] == f"slmforge/{kind}:{__version__}", task_name
        resources = container.get("resources", {})
        if on_gpu:  # type and count from the pipeline's parameters, so one template serves every GPU
            accel = resources["accelerator"]
            assert accel["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
            assert accel["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}"
            assert (
                task["inputs"]["parameters"]["pipelinechannel--accelerator_type"]
                == {"componentInputParameter": "accelerator_type"}
                or task_name == "export-op"
            ), task_name  # export sits in the gate-passed branch
        else:
            assert "accelerator" not in resources, task_name
        if task_name in LIMITED:
            assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == ("8", "32G"), (
                task_name
            )
            assert (resources["cpuLimit"], resources["memoryLimit"]) == (8.0, 32.0), task_name
        policy = task.get("retryPolicy", {})
        assert policy.get("maxRetryCount", 0) == retries, task_name
        if retries and task_name not in TRAINING:
            assert (policy["backoffDuration"], policy["backoffFactor"]) == ("60s", 2.0), task_name
        assert task.get("cachingOptions", {}).get("enableCache", False) is cached, task_name


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


def test_deploy_runs_only_after_register_and_when_asked(spec):
    """deploy.after_register (off by default) guards the deploy step inside the gate's branch; it deploys
    what register recorded, smoke-checked against the export's own eval predictions."""
    branch = spec["components"]["comp-condition-1"]["dag"]["tasks"]["condition-2"]
    assert branch["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--deploy_after_register'] == true"
    )
    assert spec["root"]["inputDefinitions"]["parameters"]["deploy_after_register"]["defaultValue"] is False
    deploy = _tasks(spec)["deploy-op"]["inputs"]["artifacts"]
    assert deploy["registered"]["componentInputArtifact"] == "pipelinechannel--register-op-registered"
    assert deploy["predictions"]["componentInputArtifact"] == "pipelinechannel--export-op-predictions"


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


@pytest.mark.parametrize("name", ["finetune", "finetune-multinode", "evaluate"])
def test_docstrings_become_descriptions(compiled, spec, name):
    params = compiled[name]["root"]["inputDefinitions"]["parameters"]
    assert all(p.get("description") for p in params.values()), [
        k for k, p in params.items() if not p.get("description")
    ]
    train_inputs = spec["components"]["comp-train-op"]["inputDefinitions"]["parameters"]
    assert train_inputs["lora_r"]["description"] == "LoRA rank (method lora)."


def test_image_override(tmp_path):
    from pipelines.compiler import compile_all

    path = next(
        p
        for p in compile_all(tmp_path, image_repo="us-docker.pkg.dev/p/r", image_tag="abc123")
        if p.name == "finetune-multinode.yaml"
    )
    images = {
        e["container"]["image"]
        for e in yaml.safe_load(path.read_text())["deploymentSpec"]["executors"].values()
    }
    assert images == {"us-docker.pkg.dev/p/r/cpu:abc123", "us-docker.pkg.dev/p/r/trainer:abc123"}
    (launcher,) = (
        e["container"]
        for e in yaml.safe_load(path.read_text())["deploymentSpec"]["executors"].values()
        if "--worker-container" in e["container"].get("args", [])
    )
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

    pools = worker_pool_specs(
        worker,
        '{"inputs": {}}',
        replica_count=3,
        machine_type="",
        accelerator_type="NVIDIA_A100_80GB",
        accelerator_count=8,
    )
    assert [p["replica_count"] for p in pools] == [1, 2]  # chief + 2 workers
    assert pools[0]["machine_spec"] == {
        "machine_type": "a2-ultragpu-8g",
        "accelerator_type": "NVIDIA_A100_80GB",
        "accelerator_count": 8,
    }
    assert pools[1]["container_spec"]["args"][
        pools[1]["container_spec"]["args"].index("--executor_input") + 1
    ] == ('{"inputs": {}}')

    # evaluation takes the chief's model, the custom-job task's output
    model = tasks["evaluate-op"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
    assert model == {"outputArtifactKey": "model", "producerTask": "train-op-custom-job"}


def test_evaluate_pipeline_scores_a_fetched_model_without_training(evaluate, spec):
    tasks = _tasks(evaluate)
    assert set(tasks) == {
        "ingest-op",
        "clean-op",
        "split-op",
        "fetch-model-op",
        "evaluate-op",
        "evaluate-base-op",
        "evaluate-champion-op",
        "retrieval-baseline-op",
        "gate-op",
    }
    model = tasks["evaluate-op"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
    assert model == {"outputArtifactKey": "model", "producerTask": "fetch-model-op"}
    assert tasks["fetch-model-op"]["inputs"]["parameters"]["model_uri"] == {
        "componentInputParameter": "model_uri"
    }
    # the same data preparation, evaluation arguments and gate as finetune: identical task inputs
    finetune_tasks = _tasks(spec)
    for name in (
        "ingest-op",
        "clean-op",
        "split-op",
        "evaluate-base-op",
        "evaluate-champion-op",
        "retrieval-baseline-op",
        "gate-op",
    ):
        assert tasks[name]["inputs"] == finetune_tasks[name]["inputs"], name
    candidate = {k: v for k, v in tasks["evaluate-op"]["inputs"]["parameters"].items()}
    assert candidate == finetune_tasks["evaluate-op"]["inputs"]["parameters"]
    outputs = evaluate["root"]["outputDefinitions"]
    assert set(outputs["artifacts"]) == {"candidate_metrics", "base_metrics"}
    assert set(outputs["parameters"]) == {"gate_passed", "gate_reasons"}


def test_evaluate_parameters_are_finetunes_plus_the_model(evaluate, spec):
    """Same names, defaults and descriptions as the finetune pipeline's (one config feeds both), and
    ``model_uri``; ``submit --pipeline evaluate`` narrows a config's parameters to these."""
    from components.common.config_load import load_config
    from pipelines.evaluate import evaluate_parameters
    from pipelines.parameters import pipeline_parameters

    mine = evaluate["root"]["inputDefinitions"]["parameters"]
    theirs = spec["root"]["inputDefinitions"]["parameters"]
    assert set(mine) - set(theirs) == {"model_uri"}
    for name in set(mine) - {"model_uri", "model_name"}:
        assert mine[name] == theirs[name], name
    assert mine["model_uri"]["parameterType"] == "STRING" and "defaultValue" not in mine["model_uri"]
    params = evaluate_parameters(pipeline_parameters(load_config(REPO / "examples/travel/config.yaml")), "m")
    assert set(params) == set(mine) and params["model_uri"] == "m"


def test_compiling_is_deterministic_and_reads_no_environment(tmp_path):
    """The same code gives the same bytes, whatever the environment holds: compile.py in a bare
    environment and in one full of slmforge/Google/MLflow settings writes identical files."""
    outputs = []
    for i, env in enumerate(
        [
            {"PATH": "/usr/bin:/bin"},
            {
                "PATH": "/usr/bin:/bin",
                "SLMFORGE_HOME": "/nonexistent",
                "SLMFORGE_GIT_SHA": "f" * 40,
                "GOOGLE_CLOUD_PROJECT": "elsewhere",
                "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
                "HOME": "/nowhere",
            },
        ]
    ):
        out = tmp_path / f"run{i}"
        done = subprocess.run(
            [sys.executable, "compile.py", "--out", str(out)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        outputs.append({p.name: p.read_bytes() for p in sorted(out.glob("*.yaml"))})
    assert list(outputs[0]) == ["evaluate.yaml", "finetune-multinode.yaml", "finetune.yaml"]
    assert outputs[0] == outputs[1]


def test_image_tag_git_is_the_source_revision(tmp_path, monkeypatch):
    from pipelines.compiler import compile_all

    monkeypatch.setenv("SLMFORGE_GIT_SHA", "0123abcd" * 5)
    (path,) = [p for p in compile_all(tmp_path, image_tag="git") if p.name == "evaluate.yaml"]
    images = {
        e["container"]["image"]
        for e in yaml.safe_load(path.read_text())["deploymentSpec"]["executors"].values()
    }
    assert images == {f"slmforge/cpu:{'0123abcd' * 5}", f"slmforge/trainer:{'0123abcd' * 5}"}
