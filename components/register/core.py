"""register: record a gated candidate as an MLflow model version with lineage tags and alias ``candidate``.

Embedded default: a sqlite store and an artifact folder under ``$SLMFORGE_HOME`` (no server). Any
MLflow tracking server works through ``tracking_uri``. Registration is idempotent by weights hash:
registering the same weights again returns the existing version (and re-points the alias).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.common.home import slmforge_home

CANDIDATE = "candidate"


@dataclass
class RegisterResult:
    model_uri: str  # models:/<name>/<version>
    name: str
    version: str
    run_id: str
    created: bool  # False when these weights were already registered


def default_tracking_uri() -> str:
    home = slmforge_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def _experiment_id(client, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:"):  # keep artifacts beside the db, not in ./mlruns of the cwd
        artifact_location = (slmforge_home() / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def register(
    model_dir: str | Path,
    *,
    model_name: str,
    weights_sha256: str,
    metrics: dict[str, float],
    tags: dict[str, str],
    tracking_uri: str = "",
) -> RegisterResult:
    """Register the Model folder ``model_dir`` under ``model_name``; set alias ``candidate`` on it."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    tracking_uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="registered by slmforge")

    existing = client.search_model_versions(
        f"name = '{model_name}' and tag.weights_sha256 = '{weights_sha256}'"
    )
    if existing:
        mv = sorted(existing, key=lambda v: int(v.version))[0]
        client.set_registered_model_alias(model_name, CANDIDATE, mv.version)
        return RegisterResult(
            f"models:/{model_name}/{mv.version}", model_name, str(mv.version), mv.run_id, False
        )

    run = client.create_run(
        _experiment_id(client, model_name, tracking_uri), tags={"slmforge.stage": "register"}
    )
    run_id = run.info.run_id
    for key, value in metrics.items():
        client.log_metric(run_id, key.replace("[]", "_"), value)  # MLflow keys allow no brackets
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.log_artifacts(run_id, str(model_dir), artifact_path="model")
    client.set_terminated(run_id)
    version_tags = {**tags, "weights_sha256": weights_sha256}
    mv = client.create_model_version(
        model_name, source=f"{run.info.artifact_uri}/model", run_id=run_id, tags=version_tags
    )
    client.set_registered_model_alias(model_name, CANDIDATE, mv.version)
    return RegisterResult(f"models:/{model_name}/{mv.version}", model_name, str(mv.version), run_id, True)


def download_alias(
    model_name: str, alias: str, dst: str | Path, tracking_uri: str = ""
) -> tuple[str, Path] | None:
    """Download the model version ``alias`` points at (e.g. ``champion``) into ``dst``; returns its
    ``models:/name/version`` URI and local folder, or None when the model or the alias does not exist."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    tracking_uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        mv = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    Path(dst).mkdir(parents=True, exist_ok=True)
    local = download_artifacts(artifact_uri=mv.source, dst_path=str(dst), tracking_uri=tracking_uri)
    return f"models:/{model_name}/{mv.version}", Path(local)
