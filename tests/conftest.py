"""Shared fixtures. Everything runs offline on the tiny://travel model, built once per session by the
same builder the product uses (components/common/tiny.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

# Before torch is imported anywhere: 1 intra-op thread (2 threads ran 14-20x slower under load here).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAVEL = REPO / "examples" / "travel"


@pytest.fixture(scope="session", autouse=True)
def slmforge_home(tmp_path_factory) -> Path:
    """A session-wide $SLMFORGE_HOME so tests never touch the user's .slmforge/."""
    home = tmp_path_factory.mktemp("slmforge-home")
    old = os.environ.get("SLMFORGE_HOME")
    os.environ["SLMFORGE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("SLMFORGE_HOME", None)
    else:
        os.environ["SLMFORGE_HOME"] = old


@pytest.fixture(scope="session")
def tiny_model(slmforge_home) -> Path:
    from components.common.tiny import ensure_tiny_model

    return ensure_tiny_model("tiny://travel")


@pytest.fixture(scope="session")
def travel_config():
    from components.common.config import load_config

    return load_config(TRAVEL / "config.yaml")


@pytest.fixture(scope="session")
def travel_schema() -> dict:
    return json.loads((TRAVEL / "schema.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def travel_rows() -> list[dict]:
    with (TRAVEL / "data" / "travel.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture()
def canonical_table(tmp_path, travel_rows) -> Path:
    """The first 400 travel rows as a canonical parquet table."""
    from components.common.tables import write_rows

    path = tmp_path / "canonical.parquet"
    write_rows([{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in travel_rows[:400]], path)
    return path
