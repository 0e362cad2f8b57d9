"""Model registries behind one small interface: MLflow (embedded sqlite or any tracking server) and
Vertex AI Model Registry (components/register/vertex_registry.py). This module is the interface only;
components/register/registries.py ``open_registry`` picks the implementation a config names.

A registry holds named models; each has numbered versions carrying string tags (lineage, gate verdicts,
audit marks) and aliases (``candidate``, ``champion``) that point at one version each. Promotion,
rollback, lineage and registration (components/register/core.py, pipelines/cli_registry.py) speak only
this interface, so the same commands work against either backend.

Tags are the registry's record of a version. The ones slmforge writes (``TAG_*`` below) are part of the
interface: the gate verdict recorded at registration is what ``slmforge promote`` checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

CANDIDATE = "candidate"
CHAMPION = "champion"

# Tags every slmforge version carries (values are strings in every backend).
TAG_WEIGHTS = "weights_sha256"  # sha256 of the registered folder: the idempotency key
TAG_GATE = "gate_passed"  # "true" | "false": the recorded gate verdict
TAG_GATE_FAILED = "gate_failed_rules"  # JSON list of the failing rules' sentences ("[]" when green)
TAG_RUN = "pipeline_run"  # the pipeline job that produced the version


@dataclass
class ModelVersion:
    name: str  # registered model name
    version: str  # "1", "2", ... (strings in every backend)
    uri: str  # models:/<name>/<version> (MLflow) or projects/../models/<id>@<version> (Vertex)
    source: str  # where the weights folder lives (artifact URI)
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def gate_passed(self) -> bool:
        return self.tags.get(TAG_GATE) == "true"


@dataclass(frozen=True)
class NewVersion:
    """What ``Registry.register`` records on a new version of model ``name``."""

    name: str
    weights_sha256: str  # sha256 of the registered folder: the idempotency key (TAG_WEIGHTS)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the evaluation recorded with the version
    description: str = ""


class RegistryError(RuntimeError):
    """The registry refused or cannot do what was asked; the message says what and how to fix it."""


class Registry(Protocol):
    backend: str  # "mlflow" | "vertex"

    def register(self, model_dir: str | Path, new: NewVersion) -> tuple[ModelVersion, bool]:
        """Upload ``model_dir`` as a new version of ``new.name`` (created when missing) with ``new.tags``
        plus ``new.weights_sha256``; return it and True. When a version with the same weights exists,
        create nothing and return that version and False (idempotent)."""
        ...

    def get(self, name: str, version: str) -> ModelVersion | None: ...

    def by_alias(self, name: str, alias: str) -> ModelVersion | None: ...

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first; [] when the model does not exist."""
        ...

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (moving it from wherever it was)."""
        ...

    def set_tags(self, name: str, version: str, tags: dict[str, str]) -> None: ...

    def add_audit(self, name: str, record: dict[str, Any]) -> None:
        """Keep an audit record (promotion, rollback) on the registered model itself."""
        ...

    def audit(self, name: str) -> list[dict[str, Any]]:
        """The audit records of ``name``, oldest first."""
        ...

    def download(self, name: str, version: str, dst: str | Path) -> Path:
        """Copy the version's weights folder into ``dst``; return the local folder."""
        ...
