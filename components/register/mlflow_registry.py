"""The MLflow model registry (components/register/backends.py ``Registry``).

Embedded default: a sqlite store and an artifact folder under ``$SLMFORGE_HOME`` (no server); any MLflow
tracking server through ``tracking_uri``. A version's weights are the artifacts of a registration run
(``MlflowClient.create_model_version`` with that run's artifact folder as source: ``mlflow.register_model``
refuses a plain artifact folder in MLflow 3, it wants a logged model). Audit records are registered-model
tags ``audit.<n>`` holding JSON, numbered in order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.common.home import slmforge_home
from components.register.backends import TAG_WEIGHTS, ModelVersion, NewVersion, RegistryError

_AUDIT_PREFIX = "audit."


def default_tracking_uri() -> str:
    home = slmforge_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


class MlflowRegistry:
    backend = "mlflow"

    def __init__(self, tracking_uri: str = ""):
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # -- reading -------------------------------------------------------------------------------------
    def _version(self, mv) -> ModelVersion:
        return ModelVersion(
            name=mv.name,
            version=str(mv.version),  # a tracking server answers strings, sqlite ints
            uri=f"models:/{mv.name}/{mv.version}",
            source=mv.source,
            tags=dict(mv.tags or {}),
            aliases=tuple(getattr(mv, "aliases", None) or ()),
        )

    def _exists(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
            return True
        except MlflowException:
            return False

    def get(self, name: str, version: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._version(self.client.get_model_version(name, str(version)))
        except MlflowException:
            return None

    def by_alias(self, name: str, alias: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._version(self.client.get_model_version_by_alias(name, alias))
        except MlflowException:
            return None

    def versions(self, name: str) -> list[ModelVersion]:
        if not self._exists(name):
            return []
        found = self.client.search_model_versions(f"name = '{name}'")
        # search results carry no aliases in every store; read each version whole
        return sorted((self.get(name, str(mv.version)) for mv in found), key=lambda v: int(v.version))

    # -- writing -------------------------------------------------------------------------------------
    def _experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        artifact_location = None
        if self.tracking_uri.startswith("sqlite:"):  # artifacts beside the db, not in ./mlruns of the cwd
            artifact_location = (slmforge_home() / "mlartifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=artifact_location)

    def register(self, model_dir: str | Path, new: NewVersion) -> tuple[ModelVersion, bool]:
        name, weights_sha256, tags, metrics = new.name, new.weights_sha256, new.tags, new.metrics
        if not self._exists(name):
            self.client.create_registered_model(name, description="registered by slmforge")
        existing = self.client.search_model_versions(
            f"name = '{name}' and tag.{TAG_WEIGHTS} = '{weights_sha256}'"
        )
        if existing:
            first = min(existing, key=lambda v: int(v.version))
            return self.get(name, str(first.version)), False
        run = self.client.create_run(self._experiment_id(name), tags={"slmforge.stage": "register"})
        run_id = run.info.run_id
        for key, value in metrics.items():
            self.client.log_metric(run_id, key.replace("[]", "_"), value)  # MLflow keys allow no brackets
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)
        self.client.log_artifacts(run_id, str(model_dir), artifact_path="model")
        self.client.set_terminated(run_id)
        mv = self.client.create_model_version(
            name,
            source=f"{run.info.artifact_uri}/model",
            run_id=run_id,
            tags={**tags, TAG_WEIGHTS: weights_sha256},
            description=new.description or None,
        )
        return self.get(name, str(mv.version)), True

    def set_alias(self, name: str, alias: str, version: str) -> None:
        if self.get(name, version) is None:
            raise RegistryError(
                f"{name} has no version {version}: list them with `slmforge lineage models:/{name}`"
            )
        self.client.set_registered_model_alias(name, alias, str(version))

    def set_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, str(value))

    def add_audit(self, name: str, record: dict[str, Any]) -> None:
        n = len(self.audit(name)) + 1
        self.client.set_registered_model_tag(
            name, f"{_AUDIT_PREFIX}{n:06d}", json.dumps(record, sort_keys=True)
        )

    def audit(self, name: str) -> list[dict[str, Any]]:
        if not self._exists(name):
            return []
        tags = self.client.get_registered_model(name).tags or {}
        return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(_AUDIT_PREFIX))]

    def download(self, name: str, version: str, dst: str | Path) -> Path:
        from mlflow.artifacts import download_artifacts

        mv = self.get(name, version)
        if mv is None:
            raise RegistryError(f"{name} has no version {version}")
        Path(dst).mkdir(parents=True, exist_ok=True)
        return Path(
            download_artifacts(artifact_uri=mv.source, dst_path=str(dst), tracking_uri=self.tracking_uri)
        )
