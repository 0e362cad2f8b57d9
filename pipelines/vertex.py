"""Submit a compiled pipeline to Vertex AI Pipelines as a PipelineJob (one run of ``submit CONFIG``).

Runs are created with ``experiment=`` so they line up in the Vertex console's comparison view, with
the config flattened into explicit parameters (pipelines/parameters.py pipeline_parameters).

Endpoint: ``$SLMFORGE_VERTEX_ENDPOINT`` overrides Google's regional endpoint (components/common/vertex.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.common.vertex import vertex_init

# PipelineState names after which a run changes no more (google.cloud.aiplatform_v1.types.PipelineState).
FINAL_STATES = frozenset({"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED"})
# Vertex AI Experiments names: lowercase letters, digits and dashes, starting with a letter or digit.
_EXPERIMENT = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")


class VertexConfigError(ValueError):
    pass


def _label(value: str) -> str:
    """Vertex labels: lowercase letters, digits, - and _, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def template_inputs(template_path: str | Path) -> dict[str, dict]:
    """The root parameters a compiled pipeline declares: name -> its inputDefinitions entry (the first
    document: a kfp-target template has its platform spec as a second)."""
    import yaml

    spec = next(yaml.safe_load_all(Path(template_path).read_text(encoding="utf-8")))
    return spec["root"].get("inputDefinitions", {}).get("parameters", {})


def job_request(
    cfg,
    params: dict[str, Any],
    template_path: str | Path,
    *,
    enable_caching: bool | None = None,
) -> dict[str, Any]:
    """Everything the PipelineJob is created with; ``--dry-run`` prints this instead of submitting.

    ``params`` are narrowed to the parameters the template declares (the evaluate pipeline takes a
    subset of the finetune pipeline's); one it requires but ``params`` lacks is an error.
    ``enable_caching``: None keeps each task's compiled caching option (the gate, champion evaluation and
    registration never reuse a cached result); True/False would overwrite it on every task (the SDK
    rewrites ``cachingOptions`` of the whole spec), so the CLI offers only False (``--no-cache``)."""
    v = cfg.vertex
    missing = [name for name in ("project", "pipeline_root") if not getattr(v, name)]
    if missing:
        raise VertexConfigError(
            f"[VTX-001] vertex.{missing[0]} is empty: set vertex.project and vertex.pipeline_root (gs://...) "
            "in the config to submit to Vertex; use `slmforge run CONFIG --local` to run here"
        )
    if not v.pipeline_root.startswith("gs://"):
        raise VertexConfigError(f"[VTX-002] vertex.pipeline_root={v.pipeline_root!r}: must be a gs:// URI")
    experiment = v.experiment or params.get("experiment") or cfg.name
    if not _EXPERIMENT.fullmatch(experiment):
        raise VertexConfigError(
            f"[VTX-005] experiment {experiment!r} is not a Vertex AI Experiments name (lowercase letters, "
            "digits and -, at most 128): set vertex.experiment"
        )
    declared = template_inputs(template_path)
    absent = [
        k
        for k, d in declared.items()
        if k not in params and "defaultValue" not in d and not d.get("isOptional")
    ]
    if absent:
        raise VertexConfigError(f"[VTX-006] {template_path} needs parameters {', '.join(sorted(absent))}")
    local_models = [k for k in ("base_model", "model_uri") if _is_local_path(str(params.get(k, "")))]
    if local_models:
        raise VertexConfigError(
            f"[VTX-007] {local_models[0]}={params[local_models[0]]!r} is a folder on this machine, which Vertex "
            "steps cannot read: copy it to gs:// (gcloud storage cp -r) and give that URI"
        )
    from components.common.provenance import git_sha

    params, uploads = stage_local_data(params, v.pipeline_root)
    return {
        "project": v.project,
        "location": v.region,
        "display_name": f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        "template_path": str(template_path),
        "pipeline_root": v.pipeline_root,
        "parameter_values": {k: value for k, value in params.items() if k in declared},
        "enable_caching": enable_caching,
        "labels": {
            **v.labels,
            "slmforge-config": _label(params["config_hash"][:16]),
            "slmforge-git": _label(git_sha()[:16]),
        },
        "service_account": v.service_account or None,
        "network": v.network or None,
        "experiment": experiment,
        "uploads": uploads,
    }


def _is_local_path(value: str) -> bool:
    return value.startswith(("/", "./", "../"))


DATA_PARAMETERS = ("train_data", "eval_data")
STAGING_FOLDER = "slmforge-data"  # under vertex.pipeline_root


def local_data(params: dict[str, Any]) -> list[str]:
    """The data parameters whose locator is a file on this machine (not gs://, not the hub)."""
    from components.ingest.sources import parse_locator

    found = []
    for key in DATA_PARAMETERS:
        text = str(params.get(key) or "")
        loc = parse_locator(text) if text else None
        if loc is not None and loc.format != "hf_hub" and "://" not in loc.path:
            found.append(key)
    return found


def stage_local_data(params: dict[str, Any], pipeline_root: str) -> tuple[dict[str, Any], list[dict]]:
    """Point local data locators at gs:// copies that ``upload_staged`` makes: Vertex steps cannot read this
    machine's files. A copy lives at ``<pipeline_root>/slmforge-data/<sha256 prefix>/<name>``, so the same
    data is uploaded once and a changed file gets a new URI (and no stale cached step). A format prefix
    (``jsonl:PATH``) is kept. Returns the new parameters and the uploads (``{"from", "to"}``) to make."""
    from components.common.provenance import sha256_path
    from components.ingest.sources import parse_locator

    params, uploads = dict(params), []
    for key in local_data(params):
        text = str(params[key])
        loc = parse_locator(text)
        local = Path(loc.path)
        uri = f"{pipeline_root.rstrip('/')}/{STAGING_FOLDER}/{sha256_path(local)[:16]}/{local.name}"
        params[key] = text[: len(text) - len(loc.path)] + uri
        uploads.append({"from": str(local), "to": uri})
    return params, uploads


def upload_staged(uploads: list[dict], project: str) -> list[str]:
    """Copy each planned local file or folder to its gs:// URI; objects already there are kept (their URI
    names their content). Returns the gs:// URIs written. ``$STORAGE_EMULATOR_HOST`` points the client
    at an emulator."""
    from google.api_core.exceptions import NotFound
    from google.cloud import storage

    from components.common.gcs import split_uri

    client, written = storage.Client(project=project), []
    for upload in uploads:
        local, (bucket_name, name) = Path(upload["from"]), split_uri(upload["to"])
        files = (
            [(local, name)]
            if local.is_file()
            else [
                (f, f"{name}/{f.relative_to(local).as_posix()}")
                for f in sorted(local.rglob("*"))
                if f.is_file()
            ]
        )
        bucket = client.bucket(bucket_name)
        try:
            for path, key in files:
                blob = bucket.blob(key)
                if not blob.exists():
                    blob.upload_from_filename(str(path))
                    written.append(f"gs://{bucket_name}/{key}")
        except NotFound:
            raise VertexConfigError(
                f"[VTX-008] bucket {bucket_name!r} of vertex.pipeline_root does not exist: create it "
                "(infra/) or fix vertex.pipeline_root"
            ) from None
    return written


def create_job(request: dict[str, Any]):
    """Upload the staged data, create the PipelineJob on Vertex AI (associated with its experiment) and
    return the SDK's job."""
    from google.cloud import aiplatform

    upload_staged(request["uploads"], request["project"])
    vertex_init(request["project"], request["location"])
    job = aiplatform.PipelineJob(
        display_name=request["display_name"],
        template_path=request["template_path"],
        pipeline_root=request["pipeline_root"],
        parameter_values=request["parameter_values"],
        enable_caching=request["enable_caching"],
        labels=request["labels"],
    )
    job.submit(
        service_account=request["service_account"],
        network=request["network"],
        experiment=request["experiment"],
    )
    return job


def console_url(job) -> str:
    """The run's page in the Google Cloud console."""
    return job._dashboard_uri()  # the SDK's own composition of the URL (pipeline_jobs.py)


def stream_states(
    job,
    on_change: Callable[[str], None],
    *,
    poll_s: float = 20.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll the job's state until it is final, calling ``on_change(state name)`` at every change; return
    the final state. (``PipelineJob.wait()`` polls too, but logs only every few minutes.)"""
    last = ""
    while True:
        state = job.state.name  # one GET of the job per read
        if state != last:
            on_change(state)
            last = state
        if state in FINAL_STATES:
            return state
        sleep(poll_s)


def job_error(job) -> str:
    """The error message of a failed or cancelled job ("" when there is none)."""
    error = job.gca_resource.error
    return error.message if error and error.message else ""
