"""Shared fixtures. Everything runs offline on the tiny://travel model, built once per session by the
same builder the product uses (components/common/tiny.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

# Before torch is imported anywhere: 1 intra-op thread (2 threads ran 14-20x slower under load here).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# pytest-xdist workers start with COLUMNS=80 in their environment; rich's Console fixes its width from it
# when the CLI module is imported, so the CLI tests' own COLUMNS (CliRunner env) would be ignored.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)

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
    from components.common.config_load import load_config

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs_emulator():
    """A ``gcp-storage-emulator`` process (in-memory) on a free local port: its http:// address."""
    if importlib.util.find_spec("gcp_storage_emulator") is None:
        pytest.skip("gcp-storage-emulator is not installed (pip install -e '.[dev]')")
    port = free_port()
    cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1", f"--port={port}"]
    proc = subprocess.Popen(
        [*cmd, "--in-memory", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.communicate()[1].decode(errors="replace")[-2000:]
                pytest.skip(f"the storage emulator did not start (exit {proc.returncode}): {err}")
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    os.kill(proc.pid, 15)  # SIGTERM, then make sure
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, 9)
        proc.wait()
    proc.stderr.close()
