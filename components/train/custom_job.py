"""The train component as a Vertex AI custom job with worker pools: multi-node training.

A pipeline task runs on one machine. For more nodes, ``as_custom_job(train_op)`` returns a component with
the same inputs and outputs whose container, on the small CPU image, is a *launcher*: it creates a Vertex AI
CustomJob (REST ``projects.locations.customJobs.create``) whose worker pools run the train component's own
container (trainer image, command and arguments) on every replica:

* workerpool0: 1 replica, the chief (node 0), which writes the step's outputs;
* workerpool1: ``replica_count - 1`` replicas, the other nodes;

every replica with ``machine_type`` and ``accelerator_count`` × ``accelerator_type``. Inside each replica
the component reads Vertex's ``CLUSTER_SPEC`` and trains under torchrun, one process per GPU
(components/train/distributed.py). The replicas get the launcher task's own executor input (``{{$}}``: input
values, input artifact URIs, output artifact URIs and the executor output file), so they read the same
dataset and write the same output artifacts, through the /gcs mount Vertex gives custom jobs, as the
single-node task would; the pipeline sees the chief's outputs as the task's outputs.

The launcher writes ``gcp_resources`` (the job's resource URI, which the Vertex console links to), polls
the job until it ends, cancels it when the task is stopped (SIGTERM), and fails naming the job's error. On a
retried task it finds the job of the previous attempt in ``gcp_resources`` and follows it instead of
starting a second one while it still runs.

This is what google-cloud-pipeline-components' ``create_custom_training_job_from_component`` does; that
package pins google-cloud-aiplatform < 2, which this project cannot take, so the launcher lives here and
is tested against a loopback stand-in of the Vertex API (tests/unit/test_custom_job.py).
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

EXECUTOR_INPUT_MARKER = "__SLMFORGE_EXECUTOR_INPUT__"  # where the replicas get the launcher's {{$}}
LAUNCHER_MODULE = "components.train.custom_job"
TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
# Launcher inputs added to the wrapped component, with their defaults: (KFP type, default).
LAUNCHER_INPUTS: dict[str, tuple[str, Any]] = {
    "replica_count": ("NUMBER_INTEGER", 2),
    "machine_type": ("STRING", ""),  # "" = the machine type that carries the accelerators
    "accelerator_type": ("STRING", "NVIDIA_L4"),
    "accelerator_count": ("NUMBER_INTEGER", 1),
    "boot_disk_size_gb": ("NUMBER_INTEGER", 200),
    "timeout": ("STRING", "604800s"),
    "service_account": ("STRING", ""),
    "network": ("STRING", ""),
    "project": ("STRING", "{{$.pipeline_google_cloud_project_id}}"),
    "location": ("STRING", "{{$.pipeline_google_cloud_location}}"),
}


class CustomJobFailed(RuntimeError):
    """The custom job ended in a state other than SUCCEEDED."""


# -- compile time ----------------------------------------------------------------------------------------
def as_custom_job(component, launcher_image: str = ""):
    """A component with ``component``'s inputs and outputs that runs it as a multi-node Vertex custom job.

    Adds the inputs of ``LAUNCHER_INPUTS`` and the output parameter ``gcp_resources``. The replicas run
    ``component``'s container unchanged; the launcher runs on ``launcher_image`` (default: the CPU image).
    """
    import yaml
    from google.protobuf import json_format
    from kfp import components

    from components.images import CPU_IMAGE, WORKER_CONTAINER_FLAG

    spec = json_format.MessageToDict(component.pipeline_spec)
    (executor,) = spec["deploymentSpec"]["executors"].values()
    container = executor["container"]
    (comp,) = spec["components"].values()
    worker_container = {
        "image_uri": container["image"],
        "command": [_mark(a) for a in container.get("command", [])],
        "args": [_mark(a) for a in container.get("args", [])],
    }
    params = comp.setdefault("inputDefinitions", {}).setdefault("parameters", {})
    for name, (kind, default) in LAUNCHER_INPUTS.items():
        if name in params:
            raise ValueError(
                f"{component.name} already has an input {name!r}; the custom job launcher needs it"
            )
        params[name] = {"parameterType": kind, "defaultValue": default, "isOptional": True}
    outputs = comp.setdefault("outputDefinitions", {}).setdefault("parameters", {})
    outputs["gcp_resources"] = {"parameterType": "STRING"}
    args = [WORKER_CONTAINER_FLAG, json.dumps(worker_container, sort_keys=True), "--executor-input", "{{$}}"]
    for name in LAUNCHER_INPUTS:
        args += [f"--{name.replace('_', '-')}", f"{{{{$.inputs.parameters['{name}']}}}}"]
    args += ["--gcp-resources", "{{$.outputs.parameters['gcp_resources'].output_file}}"]
    executor["container"] = {
        "image": launcher_image or CPU_IMAGE,
        "command": ["python3", "-m", LAUNCHER_MODULE],
        "args": args,
    }
    # The root DAG of a one-component spec mirrors the component's interface.
    spec["root"]["inputDefinitions"] = copy.deepcopy(comp["inputDefinitions"])
    wrapped = components.load_component_from_text(yaml.safe_dump(spec, sort_keys=False))
    wrapped.component_spec.name = f"{component.component_spec.name}-custom-job"
    wrapped.description = (
        f"{component.description or ''}\n\nRuns as a Vertex AI custom job with worker pools "
        "(components/train/custom_job.py)."
    ).strip()
    return wrapped


def _mark(arg: str) -> str:
    # {{$}} inside the launcher's own arguments would be replaced by the backend; the launcher puts it back.
    return EXECUTOR_INPUT_MARKER if arg == "{{$}}" else arg


# -- run time --------------------------------------------------------------------------------------------
def worker_pool_specs(
    worker_container: dict,
    executor_input: str,
    *,
    replica_count: int,
    machine_type: str,
    accelerator_type: str,
    accelerator_count: int,
    boot_disk_size_gb: int = 200,
) -> list[dict]:
    """workerpool0 (the chief, 1 replica) and, with more than one replica, workerpool1 (the rest)."""
    if replica_count < 1:
        raise ValueError(f"replica_count={replica_count}: a custom job needs at least 1 replica")
    if not machine_type:
        from components.preflight.prices import machine_type_for

        machine_type = machine_type_for(accelerator_type, accelerator_count) or ""
        if not machine_type:
            raise ValueError(
                f"no machine type carries {accelerator_count} x {accelerator_type}: set vertex.machine_type"
            )
    container = {
        "image_uri": worker_container["image_uri"],
        "command": [executor_input if a == EXECUTOR_INPUT_MARKER else a for a in worker_container["command"]],
        "args": [executor_input if a == EXECUTOR_INPUT_MARKER else a for a in worker_container["args"]],
    }
    machine = {"machine_type": machine_type}
    if accelerator_type and accelerator_count:
        machine.update(accelerator_type=accelerator_type, accelerator_count=accelerator_count)
    chief = {
        "machine_spec": machine,
        "replica_count": 1,
        "container_spec": container,
        "disk_spec": {"boot_disk_type": "pd-ssd", "boot_disk_size_gb": boot_disk_size_gb},
    }
    pools = [chief]
    if replica_count > 1:
        pools.append({**copy.deepcopy(chief), "replica_count": replica_count - 1})
    return pools


def _is_loopback(endpoint: str) -> bool:
    host = urlparse(endpoint if "://" in endpoint else f"//{endpoint}").hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def job_client(location: str, api_endpoint: str = ""):
    """A REST JobServiceClient for ``location``; a loopback http endpoint (tests) gets no credentials."""
    from google.cloud import aiplatform_v1

    endpoint = api_endpoint or f"{location}-aiplatform.googleapis.com"
    credentials = None
    if _is_loopback(endpoint):
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    return aiplatform_v1.JobServiceClient(
        transport="rest", credentials=credentials, client_options={"api_endpoint": endpoint}
    )


def _resource_uri(location: str, name: str) -> str:
    return f"https://{location}-aiplatform.googleapis.com/v1/{name}"


def _previous_job(gcp_resources: Path) -> str:
    """The job name a previous attempt of this task recorded, or ""."""
    try:
        resources = json.loads(gcp_resources.read_text()).get("resources", [])
    except (OSError, ValueError):
        return ""
    for resource in resources:
        if resource.get("resourceType") == "CustomJob":
            return resource["resourceUri"].split("/v1/", 1)[-1]
    return ""


def launch(
    *,
    worker_container: dict,
    executor_input: str,
    project: str,
    location: str,
    display_name: str,
    replica_count: int,
    machine_type: str,
    accelerator_type: str,
    accelerator_count: int,
    gcp_resources: str | Path,
    boot_disk_size_gb: int = 200,
    timeout: str = "604800s",
    service_account: str = "",
    network: str = "",
    api_endpoint: str = "",
    poll_s: float = 30.0,
) -> str:
    """Create the custom job (or follow the one a previous attempt started) and wait for it to end.

    Returns the job's resource name; raises ``CustomJobFailed`` unless it succeeded.
    """
    from google.cloud import aiplatform_v1

    client = job_client(location, api_endpoint)
    gcp_resources = Path(gcp_resources)
    name = _previous_job(gcp_resources)
    if name:
        state = client.get_custom_job(name=name).state.name
        if state == "JOB_STATE_SUCCEEDED":
            print(f"custom job {name} of a previous attempt succeeded", flush=True)
            return name
        if state in TERMINAL:
            name = ""  # it failed or was cancelled: start a new one
        else:
            print(f"following custom job {name} of a previous attempt ({state})", flush=True)
    if not name:
        pools = worker_pool_specs(
            worker_container,
            executor_input,
            replica_count=replica_count,
            machine_type=machine_type,
            accelerator_type=accelerator_type,
            accelerator_count=accelerator_count,
            boot_disk_size_gb=boot_disk_size_gb,
        )
        job = aiplatform_v1.CustomJob(
            display_name=display_name,
            job_spec=aiplatform_v1.CustomJobSpec(
                worker_pool_specs=pools,
                scheduling={"timeout": timeout},
                service_account=service_account,
                network=network,
            ),
        )
        created = client.create_custom_job(parent=f"projects/{project}/locations/{location}", custom_job=job)
        name = created.name
        gcp_resources.parent.mkdir(parents=True, exist_ok=True)
        resource = {"resourceType": "CustomJob", "resourceUri": _resource_uri(location, name)}
        gcp_resources.write_text(json.dumps({"resources": [resource]}))
        print(f"created custom job {name}: {replica_count} x {pools[0]['machine_spec']}", flush=True)
    return _wait(client, name, poll_s)


def _wait(client, name: str, poll_s: float) -> str:
    stop: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    try:
        state = ""
        while True:
            if stop:
                print(f"SIGTERM: cancelling custom job {name}", flush=True)
                client.cancel_custom_job(name=name)
                raise SystemExit(143)
            job = client.get_custom_job(name=name)
            if job.state.name != state:
                state = job.state.name
                print(f"custom job {name}: {state}", flush=True)
            if state in TERMINAL:
                break
            time.sleep(poll_s)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if state != "JOB_STATE_SUCCEEDED":
        detail = job.error.message or "no error message"
        raise CustomJobFailed(
            f"custom job {name} ended {state}: {detail}; the replicas' logs are in Cloud Logging"
        )
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {LAUNCHER_MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--worker-container", dest="worker_container", required=True, help="JSON: image_uri, command, args"
    )
    parser.add_argument("--executor-input", required=True)
    for name, (kind, _) in LAUNCHER_INPUTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int if kind == "NUMBER_INTEGER" else str)
    parser.add_argument("--gcp-resources", required=True)
    parser.add_argument("--api-endpoint", default="", help="Vertex API endpoint; default LOCATION-aiplatform")
    parser.add_argument("--poll-s", type=float, default=30.0)
    a = parser.parse_args(argv)
    task = json.loads(a.executor_input).get("outputs", {}).get("outputFile", "")
    launch(
        worker_container=json.loads(a.worker_container),
        executor_input=a.executor_input,
        project=a.project,
        location=a.location,
        display_name=f"slmforge-train-{Path(task).parent.name or 'job'}"[:128],
        replica_count=a.replica_count,
        machine_type=a.machine_type,
        accelerator_type=a.accelerator_type,
        accelerator_count=a.accelerator_count,
        gcp_resources=a.gcp_resources,
        boot_disk_size_gb=a.boot_disk_size_gb,
        timeout=a.timeout,
        service_account=a.service_account,
        network=a.network,
        api_endpoint=a.api_endpoint,
        poll_s=a.poll_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
