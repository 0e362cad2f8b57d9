"""Helpers for the images/, infra/ and .github/ checks: the linters installed by `make tools` in
.venv-tools (never in .venv, see tests/infra/requirements-*.txt). A missing linter fails the test with
the command that installs it: a check that silently skipped would pass on any broken Dockerfile."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("SLMFORGE_TOOLS", REPO / ".venv-tools"))


def tool(venv: str, name: str) -> Path:
    path = TOOLS / venv / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make tools` (the linters live in {TOOLS}, not in .venv)")
    return path


def run_tool(args: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=300, **kw)


def resources(terraform: dict[str, dict]) -> dict[tuple[str, str], dict]:
    """{(type, name): body} over every parsed .tf file."""
    found = {}
    for doc in terraform.values():
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    found[(rtype, name)] = body
    return found


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
