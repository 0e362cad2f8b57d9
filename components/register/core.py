"""register: record an exported, evaluated candidate as a registry version with lineage tags and alias
``candidate``.

The registry is MLflow (embedded sqlite by default, any tracking server) or Vertex AI Model Registry,
both behind components/register/backends.py. Registration is idempotent by weights hash: the same
weights registered again return the existing version and create nothing. The gate verdict is recorded
on the version (``gate_passed``, ``gate_failed_rules``): it is what ``slmforge promote`` checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from components.register.backends import (
    CANDIDATE,
    TAG_GATE,
    TAG_GATE_FAILED,
    TAG_RUN,
    ModelVersion,
    NewVersion,
    Registry,
)
from components.register.mlflow_registry import default_tracking_uri
from components.register.registries import open_registry


@dataclass
class RegisterResult:
    model_uri: str  # models:/<name>/<version>, or the Vertex model resource @version
    name: str
    version: str
    created: bool  # False when these weights were already registered


def registry_from_spec(spec: str | dict) -> Registry:
    """The registry a pipeline's ``registry`` parameter names: JSON {backend, tracking_uri, project,
    region, staging_bucket, serving_image} (components/common/config.py ``registry_spec``)."""
    fields = json.loads(spec) if isinstance(spec, str) else dict(spec)
    return open_registry(**(fields or {"backend": "mlflow"}))


def register(
    registry: Registry,
    model_dir: str | Path,
    *,
    model_name: str,
    weights_sha256: str,
    metrics: dict[str, float],
    tags: dict[str, str],
    gate_passed: bool,
    gate_failed_rules: list[str] = (),
    description: str = "",
) -> RegisterResult:
    """Register ``model_dir`` under ``model_name`` with ``tags`` and the gate verdict; a green version gets
    the alias ``candidate``. The same weights registered again return the first version."""
    tags = {
        **tags,
        TAG_GATE: "true" if gate_passed else "false",
        TAG_GATE_FAILED: json.dumps(list(gate_failed_rules)),
    }
    new = NewVersion(model_name, weights_sha256, tags=tags, metrics=metrics, description=description)
    version, created = registry.register(model_dir, new)
    if gate_passed:
        registry.set_alias(model_name, CANDIDATE, version.version)
    return RegisterResult(version.uri, model_name, version.version, created)


def parse_model_uri(uri: str) -> tuple[str, str, str]:
    """``models:/NAME/VERSION`` -> (NAME, VERSION, ""); ``models:/NAME@ALIAS`` -> (NAME, "", ALIAS)."""
    if not uri.startswith("models:/"):
        raise ValueError(f"{uri!r} is not a registry URI: use models:/NAME/VERSION or models:/NAME@ALIAS")
    name, _, version = uri.removeprefix("models:/").partition("/")
    name, _, alias = name.partition("@")
    if not name or bool(version) == bool(alias):
        raise ValueError(f"{uri!r}: use models:/NAME/VERSION or models:/NAME@ALIAS")
    return name, version, alias


def model_source(uri: str, registry: Registry, work: str | Path) -> str:
    """A loadable model source for ``uri``: a registry version (``models:/NAME/VERSION|@ALIAS``) is
    downloaded under ``work``; local folders, gs:// folders, hub ids and tiny:// are returned as they are."""
    if not uri.startswith("models:/"):
        return uri
    found = version_of(uri, registry)
    return str(registry.download(found.name, found.version, Path(work) / f"{found.name}-{found.version}"))


def version_of(uri: str, registry: Registry) -> ModelVersion:
    """The registry version ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` names; FileNotFoundError
    when there is none."""
    name, version, alias = parse_model_uri(uri)
    found = registry.by_alias(name, alias) if alias else registry.get(name, version)
    if found is None:
        raise FileNotFoundError(f"{uri}: no such version in the {registry.backend} registry")
    return found


def download_alias(
    registry: Registry, model_name: str, alias: str, dst: str | Path
) -> tuple[str, Path] | None:
    """Download the version ``alias`` points at (e.g. ``champion``) into ``dst``; returns its URI and local
    folder, or None when the model or the alias does not exist."""
    version = registry.by_alias(model_name, alias)
    if version is None:
        return None
    return version.uri, registry.download(model_name, version.version, dst)


__all__ = [
    "CANDIDATE",
    "RegisterResult",
    "default_tracking_uri",
    "download_alias",
    "register",
    "registry_from_spec",
    "version_of",
]


def register_to_outputs(
    model,
    metrics,
    train_data,
    registered,
    *,
    model_name: str,
    registry: str,
    config_hash: str,
    gate_passed: bool,
    gate_reasons: str,
    pipeline_run: str,
) -> str:
    """``register`` from a component's inputs; writes the version record onto ``registered``."""
    numbers = {k: float(v) for k, v in metrics.metadata.items() if isinstance(v, (int, float))}
    lineage = model.metadata.get("lineage", {})
    tags = {
        "data_sha256": train_data.metadata.get("sha256", ""),
        "config_hash": config_hash,
        TAG_RUN: pipeline_run,
        "base_model": model.metadata.get("base_model", ""),
        "git_sha": model.metadata.get("git_sha", ""),
        "gate": gate_reasons,
        **{f"lineage.{step}": ref.get("sha256", "") for step, ref in lineage.items()},
        **{f"lineage.{step}.uri": ref.get("uri", "") for step, ref in lineage.items()},
    }
    failed = [line for line in gate_reasons.splitlines() if line.startswith("FAIL")]
    weights = model.metadata.get("weights_sha256") or model.metadata["sha256"]
    result = register(
        registry_from_spec(registry),
        model.path,
        model_name=model_name,
        weights_sha256=weights,
        metrics=numbers,
        tags=tags,
        gate_passed=gate_passed,
        gate_failed_rules=failed,
        description=f"slmforge {model.metadata.get('kind', '')} model from {tags['base_model']}",
    )
    record = {**vars(result), "weights_sha256": weights, "tags": tags}
    with open(registered.path, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2, sort_keys=True)
    registered.metadata.update({k: record[k] for k in ("model_uri", "name", "version", "weights_sha256")})
    return result.model_uri
