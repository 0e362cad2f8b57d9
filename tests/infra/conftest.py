"""Fixtures for tests/infra: the Terraform documents parsed once per session (helpers: infra_tools.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from infra_tools import REPO, run_tool, tool


@pytest.fixture(scope="session")
def terraform() -> dict[str, dict]:
    """Every infra/*.tf parsed by python-hcl2 (run in the tools venv), quotes and markers stripped."""
    script = Path(__file__).with_name("hcl_dump.py")
    out = run_tool([tool("lint", "python"), script, REPO / "infra"])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
