"""The multi-node train step: the compiled custom-job launcher, run with its arguments resolved the way KFP
resolves them, against a loopback stand-in of the Vertex AI REST API (tests/loopback_vertex.py) through
the real google-cloud-aiplatform client. The slow test lets the stand-in run the worker pools as local
processes: two nodes train the tiny model together with torchrun (gloo) and node 0 writes the outputs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.cloud.aiplatform_v1 import AcceleratorType
from loopback_vertex import LoopbackVertex
from train_step import train_step_inputs

from components.images import TRAINER_IMAGE
from components.train import custom_job

SYSTEM = "You turn a travel request into a JSON list of commands."


def _train_arguments(table: Path, tmp_path: Path, **overrides) -> dict:
    from kfp import dsl

    train_data = dsl.Dataset(name="train_data", uri=str(table), metadata={"sha256": "t"})
    custom_job = dict(
        nodes=2,
        experiment="multi-node",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        project="test-project",
        location="us-central1",
        replica_count=2,
        accelerator_type="NVIDIA_L4",
        accelerator_count=1,
        machine_type="",
        service_account="sa@p.iam",
    )
    return train_step_inputs(train_data, SYSTEM, **{**custom_job, **overrides})


def _resolved_launcher(arguments: dict, task_root: Path) -> tuple[list[str], dict]:
    """The launcher's command line with every placeholder resolved by kfp.local's resolver, and its
    executor input (what the Vertex backend gives the task)."""
    from google.protobuf import json_format
    from kfp.local import executor_input_utils, placeholder_utils

    from components import train_custom_job_op

    spec = train_custom_job_op.pipeline_spec
    (component,) = spec.components.values()
    (executor,) = json_format.MessageToDict(spec)["deploymentSpec"]["executors"].values()
    task_root.mkdir(parents=True, exist_ok=True)
    message = executor_input_utils.construct_executor_input(component, arguments, str(task_root), False)
    executor_input = executor_input_utils.executor_input_to_dict(message, component)
    container = executor["container"]
    command = placeholder_utils.replace_placeholders(
        [*container["command"], *container["args"]], executor_input, "pipeline", "train", str(task_root), "1"
    )
    return command, executor_input


def _main_args(command: list[str], endpoint: str) -> list[str]:
    assert command[:3] == ["python3", "-m", "components.train.custom_job"]
    return [*command[3:], "--api-endpoint", endpoint, "--poll-s", "0.2"]


def test_launcher_creates_a_custom_job_with_worker_pools(canonical_table, tmp_path):
    command, executor_input = _resolved_launcher(
        _train_arguments(canonical_table, tmp_path, replica_count=3), tmp_path / "task"
    )
    with LoopbackVertex() as vertex:
        assert custom_job.main(_main_args(command, vertex.endpoint)) == 0
    create = [r for r in vertex.requests if r.method == "POST"]
    assert len(create) == 1 and create[0].path == "/v1/projects/test-project/locations/us-central1/customJobs"
    spec = create[0].body["jobSpec"]
    assert spec["serviceAccount"] == "sa@p.iam" and spec["scheduling"]["timeout"] == "604800s"
    pools = spec["workerPoolSpecs"]
    assert [p["replicaCount"] for p in pools] == ["1", "2"]  # chief + two workers (int64 as JSON strings)
    for pool in pools:
        machine = pool["machineSpec"]  # the REST client sends enums as numbers
        assert AcceleratorType(machine.pop("acceleratorType")).name == "NVIDIA_L4"
        assert machine == {"machineType": "g2-standard-8", "acceleratorCount": 1}
        assert pool["diskSpec"] == {"bootDiskType": "pd-ssd", "bootDiskSizeGb": 200}
        container = pool["containerSpec"]
        assert container["imageUri"] == TRAINER_IMAGE
        args = container["args"]
        assert args[args.index("--function_to_execute") + 1] == "train_op"
        # every replica gets the task's own executor input: same inputs, same output locations
        assert json.loads(args[args.index("--executor_input") + 1]) == executor_input
    resources = json.loads(
        Path(executor_input["outputs"]["parameters"]["gcp_resources"]["outputFile"]).read_text()
    )
    (job,) = vertex.jobs
    assert resources == {
        "resources": [
            {
                "resourceType": "CustomJob",
                "resourceUri": f"https://us-central1-aiplatform.googleapis.com/v1/{job}",
            }
        ]
    }


def test_a_failed_job_fails_the_step_with_its_error(canonical_table, tmp_path):
    command, _ = _resolved_launcher(_train_arguments(canonical_table, tmp_path), tmp_path / "task")
    with LoopbackVertex(state_after_create="JOB_STATE_FAILED") as vertex:
        with pytest.raises(custom_job.CustomJobFailed, match=r"JOB_STATE_FAILED: The job ran out of quota"):
            custom_job.main(_main_args(command, vertex.endpoint))


@pytest.mark.parametrize("previous, creates", [("JOB_STATE_RUNNING", 0), ("JOB_STATE_FAILED", 1)])
def test_a_retried_task_follows_the_job_of_the_previous_attempt(canonical_table, tmp_path, previous, creates):
    command, executor_input = _resolved_launcher(
        _train_arguments(canonical_table, tmp_path), tmp_path / "task"
    )
    name = "projects/test-project/locations/us-central1/customJobs/7"
    uri = f"https://us-central1-aiplatform.googleapis.com/v1/{name}"
    resources = Path(executor_input["outputs"]["parameters"]["gcp_resources"]["outputFile"])
    resources.write_text(json.dumps({"resources": [{"resourceType": "CustomJob", "resourceUri": uri}]}))
    with LoopbackVertex() as vertex:
        vertex.add_job(name, previous)
        if previous == "JOB_STATE_RUNNING":
            threading_finish = _finish_later(vertex, name)
        custom_job.main(_main_args(command, vertex.endpoint))
        if previous == "JOB_STATE_RUNNING":
            threading_finish.join()
    assert sum(r.method == "POST" for r in vertex.requests) == creates


def _finish_later(vertex: LoopbackVertex, name: str):
    import threading

    def finish():
        time.sleep(0.5)
        vertex.jobs[name].resource["state"] = "JOB_STATE_SUCCEEDED"

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


def test_sigterm_cancels_the_job(canonical_table, tmp_path):
    command, _ = _resolved_launcher(_train_arguments(canonical_table, tmp_path), tmp_path / "task")
    with LoopbackVertex(state_after_create="JOB_STATE_RUNNING") as vertex:
        proc = subprocess.Popen(
            [sys.executable, *command[1:3], *_main_args(command, vertex.endpoint)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not any(r.method == "GET" for r in vertex.requests):  # created and polling
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert "SIGTERM: cancelling custom job" in out
    (job,) = vertex.jobs
    assert vertex.requests[-1].method == "POST" and vertex.requests[-1].path == f"/v1/{job}:cancel"


def test_worker_pools_need_a_machine_for_the_accelerators():
    with pytest.raises(ValueError, match=r"no machine type carries 3 x NVIDIA_L4: set vertex\.machine_type"):
        custom_job.worker_pool_specs(
            {"image_uri": "i", "command": [], "args": []},
            "{}",
            replica_count=2,
            machine_type="",
            accelerator_type="NVIDIA_L4",
            accelerator_count=3,
        )
    with pytest.raises(ValueError, match="at least 1 replica"):
        custom_job.worker_pool_specs(
            {"image_uri": "i", "command": [], "args": []},
            "{}",
            replica_count=0,
            machine_type="g2-standard-8",
            accelerator_type="",
            accelerator_count=0,
        )


def test_two_nodes_train_together_and_node_0_writes_the_outputs(canonical_table, tiny_model, tmp_path):
    """The whole chain: launcher -> CustomJob -> two replicas (CLUSTER_SPEC) -> torchrun on each -> DDP
    (gloo); the outputs of the step are the chief's, and the run matches one node with two processes."""
    from components.train.core import TrainOptions
    from components.train.distributed import TrainJob, train_on_node

    arguments = _train_arguments(canonical_table, tmp_path)
    command, executor_input = _resolved_launcher(arguments, tmp_path / "task")
    with LoopbackVertex(run_replicas=True, log_dir=tmp_path) as vertex:
        custom_job.main(_main_args(command, vertex.endpoint))
    logs = {p.stem: p.read_text() for p in tmp_path.glob("workerpool*.log")}
    assert set(logs) == {"workerpool0-0", "workerpool1-0"}
    assert "node 1: training done; node 0 writes the outputs" in logs["workerpool1-0"]
    output = json.loads(Path(executor_input["outputs"]["outputFile"]).read_text())  # written by node 0 only
    (metrics,) = output["artifacts"]["metrics"]["artifacts"]
    assert metrics["metadata"]["world_size"] == 2 and metrics["metadata"]["steps"] == 6
    model_dir = Path(executor_input["outputs"]["artifacts"]["model"]["artifacts"][0]["uri"])
    assert (model_dir / "model.safetensors").exists() and (model_dir / "slmforge_model.json").exists()

    # One node with two processes: the same data-parallel run, so the same losses.
    opts = TrainOptions(
        method="full",
        max_steps=6,
        batch_size=8,
        learning_rate=3e-3,
        warmup_ratio=0.0,
        checkpoint_dir=str(tmp_path / "one-node"),
        logging_steps=10,
    )
    job = TrainJob(str(canonical_table), "tiny://travel", SYSTEM, opts, str(tmp_path / "one-node-model"))
    one_node = train_on_node(1, 2, job)
    assert one_node.world_size == 2
    assert one_node.final_loss == pytest.approx(metrics["metadata"]["final_loss"], abs=1e-5)
