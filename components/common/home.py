"""Where slmforge keeps local state (model cache, MLflow store): ``$SLMFORGE_HOME`` or ./.slmforge."""

from __future__ import annotations

import os
from pathlib import Path


def slmforge_home() -> Path:
    """The local state folder. Read at call time, never at import: the CLI sets it for subprocesses."""
    return Path(os.environ.get("SLMFORGE_HOME") or Path.cwd() / ".slmforge").resolve()


def repo_root() -> Path:
    """The checkout this package runs from (examples/ lives there for tiny:// models)."""
    return Path(__file__).resolve().parents[2]
