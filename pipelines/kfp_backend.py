"""Submit a pipeline compiled for the kfp target (``python compile.py --target kfp``) to a Kubeflow
Pipelines backend — ``submit CONFIG --kfp-host URL`` — follow its run, and read its runs
(``slmforge runs list|compare --kfp-host URL``: pipelines/cli_runs.py), with the real ``kfp.Client``.

The same config and the same flattened parameters as the Vertex path (pipelines/parameters.py, narrowed to
what the template declares); local data files are staged to ``<vertex.pipeline_root>/slmforge-data/`` as
for Vertex (pipelines/vertex.py), since the cluster's steps cannot read this machine. The pipeline is
uploaded once by name (``slmforge-finetune``), each distinct template as a version named by its content
hash, and the run is created in the config's experiment.

Authentication, as GKE / IAP deployments expect: an ``https://`` host gets a Google ID token, sent as the
bearer token: ``$SLMFORGE_KFP_ID_TOKEN`` when the caller minted one (pipeline.yml: the auth action's
``id_token`` for the deployer account), else one from Application Default Credentials
(``google.oauth2.id_token.fetch_id_token``; audience ``--kfp-audience``, else ``$SLMFORGE_KFP_AUDIENCE``,
else the host: IAP wants its OAuth client ID). ``http://localhost`` / ``http://127.0.0.1``
(``kubectl port-forward``, the tests' stand-in) gets none. No token is ever read from a config.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

AUDIENCE_ENV = "SLMFORGE_KFP_AUDIENCE"
TOKEN_ENV = "SLMFORGE_KFP_ID_TOKEN"
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"})
# What the Kubernetes scheduler says of a pod no node can take (kube-scheduler's messages, as Argo and the
# KFP API pass them on in a task's error).
_UNSCHEDULABLE = ("unschedulable", "didn't match pod's node affinity/selector", "insufficient nvidia.com/gpu")


class KfpError(RuntimeError):
    pass


def _loopback(host: str) -> bool:
    return host.startswith(("http://localhost", "http://127.0.0.1"))


def kfp_client(host: str, audience: str = ""):
    """A ``kfp.Client`` for ``host`` with a Google ID token (see the module docstring)."""
    import kfp

    token = None
    if not _loopback(host) and os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV]
    elif not _loopback(host):
        import google.auth.transport.requests
        from google.auth.exceptions import DefaultCredentialsError
        from google.oauth2 import id_token

        audience = audience or os.environ.get(AUDIENCE_ENV, "") or host.rstrip("/")
        try:
            token = id_token.fetch_id_token(google.auth.transport.requests.Request(), audience)
        except DefaultCredentialsError as e:
            raise KfpError(
                f"no Google credentials to sign in to {host}: run `gcloud auth application-default login` "
                "or use a service account (Workload Identity in CI); for an IAP-protected host set "
                f"--kfp-audience (or ${AUDIENCE_ENV}) to the IAP OAuth client ID ({e})"
            ) from None
    return kfp.Client(host=host, existing_token=token)


def kfp_request(cfg, params: dict[str, Any], template_path: str | Path) -> dict[str, Any]:
    """Everything the run is created with; ``--dry-run`` prints this instead of submitting."""
    import yaml

    from pipelines.vertex import _EXPERIMENT, VertexConfigError, local_data, stage_local_data, template_inputs

    text = Path(template_path).read_bytes()
    spec = next(yaml.safe_load_all(text))
    declared = template_inputs(template_path)
    if "gpu_node_selector" not in declared:
        raise KfpError(
            f"{template_path} was compiled for Vertex AI Pipelines: compile for Kubeflow Pipelines with "
            "`python compile.py --target kfp` (build/pipelines/kfp/)"
        )
    absent = sorted(k for k, d in declared.items() if k not in params and "defaultValue" not in d)
    if absent:
        raise KfpError(f"{template_path} needs parameters {', '.join(absent)}")
    experiment = cfg.vertex.experiment or params.get("experiment") or cfg.name
    if not _EXPERIMENT.fullmatch(experiment):
        raise KfpError(f"experiment {experiment!r}: lowercase letters, digits and -; set vertex.experiment")
    root = cfg.vertex.pipeline_root
    uploads: list[dict] = []
    if root:
        params, uploads = stage_local_data(params, root)
    else:
        local = local_data(params)
        if local:
            raise VertexConfigError(
                f"[VTX-001] {local[0]} is a file on this machine and vertex.pipeline_root is empty: set it "
                "(gs://...) so the data is staged where the cluster's steps can read it"
            )
    return {
        "pipeline_name": spec["pipelineInfo"]["name"],
        "version_name": f"{spec['pipelineInfo']['name']}-{hashlib.sha256(text).hexdigest()[:16]}",
        "template_path": str(template_path),
        "experiment": experiment,
        "run_name": f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        "parameters": {k: v for k, v in params.items() if k in declared},
        "pipeline_root": root or None,  # None: the backend's default (kfp-launcher's defaultPipelineRoot)
        "uploads": uploads,
        "project": cfg.vertex.project,
    }


def submit_run(client, request: dict[str, Any]):
    """Upload the staged data, the pipeline (once) and this template as a version (once per content),
    find or create the experiment, and create the run. Returns the API's run."""
    from pipelines.vertex import upload_staged

    if request["uploads"]:
        upload_staged(request["uploads"], request["project"])
    name, template = request["pipeline_name"], request["template_path"]
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(template, pipeline_name=name).pipeline_id
    version_filter = (
        '{"predicates": [{"operation": "EQUALS", "key": "display_name", '
        f'"string_value": "{request["version_name"]}"}}]}}'
    )
    found = client.list_pipeline_versions(pipeline_id, filter=version_filter).pipeline_versions or []
    version = found[0] if found else None
    if version is None:
        version = client.upload_pipeline_version(template, request["version_name"], pipeline_id=pipeline_id)
    experiment = client.create_experiment(request["experiment"])  # returns the existing one by name
    return client.run_pipeline(
        experiment_id=experiment.experiment_id,
        job_name=request["run_name"],
        params=request["parameters"],
        pipeline_id=pipeline_id,
        version_id=version.pipeline_version_id,
        pipeline_root=request["pipeline_root"],
    )


def run_url(host: str, run_id: str) -> str:
    """The run's page in the Kubeflow Pipelines UI served at ``host``."""
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def stream_run_states(
    client,
    run_id: str,
    on_change: Callable[[str], None],
    *,
    poll_s: float = 20.0,
    sleep: Callable[[float], None] = time.sleep,
):
    """Poll the run until its state is final, calling ``on_change(state)`` at every change, and
    ``on_change`` once with a scheduling explanation when a task cannot be scheduled. Returns the run."""
    last, told = "", False
    while True:
        run = client.get_run(run_id)
        state = str(run.state or "")
        if state != last:
            on_change(state)
            last = state
        if not told and unschedulable(run):
            on_change(scheduling_help(run))
            told = True
        if state in FINAL_STATES:
            return run
        sleep(poll_s)


def _messages(run) -> list[tuple[str, str]]:
    """(task, message) of every error on the run and its tasks."""
    found = []
    if run.error is not None and run.error.message:
        found.append(("run", run.error.message))
    for task in (run.run_details.task_details or []) if run.run_details else []:
        if task.error is not None and task.error.message:
            found.append((task.display_name or "", task.error.message))
    return found


def unschedulable(run) -> list[tuple[str, str]]:
    """The tasks whose pod no node can take, with the scheduler's message."""
    return [(t, m) for t, m in _messages(run) if any(s in m.lower() for s in _UNSCHEDULABLE)]


def scheduling_help(run) -> str:
    """Why a GPU step is not scheduled and what to do: what it asked for and where to look."""
    from pipelines.parameters import GPU_POOL_TAINT

    params = ((run.runtime_config.parameters or {}) if run.runtime_config else {}) or {}
    selector = params.get("gpu_node_selector", "(the template's default gpu_node_selector)")
    tasks = ", ".join(sorted({t for t, _ in unschedulable(run)}))
    taint = f"{GPU_POOL_TAINT['key']}={GPU_POOL_TAINT['value']}:{GPU_POOL_TAINT['effect']}"
    return (
        f"{tasks}: no node can take the pod ({unschedulable(run)[0][1]}). It asks for node selector "
        f"{selector}, tolerates {taint} and needs accelerator_count={params.get('accelerator_count', '?')} "
        "x nvidia.com/gpu. Check that a node pool has those labels and GPUs (infra/gke.tf gpu pool: "
        "gpu_accelerator_type must be the GKE name of vertex.accelerator_type) and that its autoscaling "
        "max and the GPU quota of the region allow a node: `kubectl describe pod` shows the scheduler's "
        "reasons"
    )


def run_error(run) -> str:
    """The run's failure in words: the scheduling explanation when a pod could not be placed, else the
    run's and its tasks' errors."""
    if unschedulable(run):
        return scheduling_help(run)
    return "; ".join(f"{task}: {message}" for task, message in _messages(run)) or "no error recorded"
