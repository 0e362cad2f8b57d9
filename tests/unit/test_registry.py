"""Registry, promotion, rollback and lineage against real MLflow: a sqlite store and a real ``mlflow server``
started on 127.0.0.1 (stopped by PID). The CLI commands are the ones the promote workflow runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.common.events import read_events
from components.register.core import register
from components.register.mlflow_registry import MlflowRegistry
from components.register.promotion import PromotionRefused, promote, rollback
from pipelines.cli import app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on loopback with a sqlite store and proxied artifacts; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "art"),
        "--workers",
        "1",
    ]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        raise RuntimeError("mlflow server did not answer /health in 90 s")
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(params=["sqlite", "server"])
def tracking_uri(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}"
    return request.getfixturevalue("mlflow_server")


def _weights(tmp_path: Path, tag: str) -> Path:
    folder = tmp_path / f"weights-{tag}"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(tag.encode() * 100)
    (folder / "config.json").write_text(json.dumps({"tag": tag}))
    return folder


def _register(registry, tmp_path, name, tag, *, green=True, run="run-" + "x"):
    failed = [] if green else ["FAIL exact_match >= 0.9: candidate 0.41"]
    return register(
        registry,
        _weights(tmp_path, tag),
        model_name=name,
        weights_sha256=tag * 8,
        metrics={"exact_match": 0.9},
        tags={
            "pipeline_run": run,
            "lineage.adapter": "a" * 64,
            "lineage.adapter.uri": "gs://b/adapter",
            "lineage.merged": "m" * 64,
            "lineage.merged.uri": "gs://b/merged",
        },
        gate_passed=green,
        gate_failed_rules=failed,
    )


def test_registering_the_same_weights_twice_makes_one_version(tracking_uri, tmp_path):
    registry = MlflowRegistry(tracking_uri)
    name = f"idem-{tmp_path.name[-12:].replace('_', '-')}"
    first = _register(registry, tmp_path, name, "a1")
    second = register(
        registry,
        _weights(tmp_path, "a1-again"),
        model_name=name,
        weights_sha256="a1" * 8,
        metrics={},
        tags={},
        gate_passed=True,
    )
    assert first.created and not second.created and first.version == second.version == "1"
    assert [v.version for v in registry.versions(name)] == ["1"]
    assert registry.by_alias(name, "candidate").version == "1"
    downloaded = registry.download(name, "1", tmp_path / "dl")
    assert (downloaded / "model.safetensors").read_bytes() == b"a1" * 100


def test_promote_refuses_red_moves_green_and_rollback_restores(tracking_uri, tmp_path):
    registry = MlflowRegistry(tracking_uri)
    name = f"promo-{tmp_path.name[-12:].replace('_', '-')}"
    events = tmp_path / "events.jsonl"
    v1 = _register(registry, tmp_path, name, "g1", run="run-1")
    v2 = _register(registry, tmp_path, name, "r2", green=False, run="run-2")
    v3 = _register(registry, tmp_path, name, "g3", run="run-3")
    assert registry.by_alias(name, "candidate").version == v3.version  # a red version never gets candidate

    first = promote(registry, name, version=v1.version, events_path=events, who="ci-bot")
    assert first.changed and first.from_version is None and registry.by_alias(name, "champion").version == "1"

    with pytest.raises(
        PromotionRefused, match=r"gate not passed \(FAIL exact_match >= 0.9: candidate 0.41\)"
    ):
        promote(registry, name, run="run-2", events_path=events, who="ci-bot")
    assert registry.by_alias(name, "champion").version == "1"  # unchanged

    moved = promote(registry, name, run="run-3", events_path=events, who="ci-bot")
    assert (moved.from_version, moved.to_version, moved.changed) == ("1", v3.version, True)
    again = promote(registry, name, version=v3.version, events_path=events, who="ci-bot")
    assert not again.changed and "nothing changed" in again.sentence()  # idempotent

    back = rollback(registry, name, to="1", events_path=events, who="on-call")
    assert (back.from_version, back.to_version) == (v3.version, "1")
    assert registry.by_alias(name, "champion").version == "1"

    audit = registry.audit(name)
    assert [(r["action"], r["from"], r["to"], r["actor"]) for r in audit] == [
        ("promote", None, "1", "ci-bot"),
        ("promote", "1", v3.version, "ci-bot"),
        ("rollback", v3.version, "1", "on-call"),
    ]
    assert registry.get(name, "1").tags["champion.rollback_by"] == "on-call"
    assert [e["code"] for e in read_events(events)] == [
        "PROMOTED",
        "PROMOTION_REFUSED",
        "PROMOTED",
        "ALIAS_UNCHANGED",
        "ROLLED_BACK",
    ]
    assert v2.version == "2"


def test_promote_and_rollback_commands(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'cli.db'}"
    registry = MlflowRegistry(uri)
    _register(registry, tmp_path, "cli-model", "g1", run="run-1")
    _register(registry, tmp_path, "cli-model", "r2", green=False, run="run-2")
    runner = CliRunner()
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    common = ["--tracking-uri", uri, "--events", str(tmp_path / "ev.jsonl")]

    ok = runner.invoke(app, ["promote", "--model", "cli-model", "--version", "1", *common])
    assert ok.exit_code == 0 and "no version -> version 1 (promote by octocat)" in ok.output
    red = runner.invoke(app, ["promote", "--model", "cli-model", "--run", "run-2", *common])
    assert red.exit_code == 1 and "gate not passed" in red.output
    assert registry.by_alias("cli-model", "champion").version == "1"
    forced = runner.invoke(
        app, ["promote", "--model", "cli-model", "--version", "2", "--no-require-green", *common]
    )
    assert forced.exit_code == 0 and "version 1 -> version 2" in forced.output
    back = runner.invoke(app, ["rollback", "--model", "cli-model", "--to", "1", *common])
    assert back.exit_code == 0 and "version 2 -> version 1 (rollback by octocat)" in back.output
    missing = runner.invoke(app, ["promote", "--model", "cli-model", "--version", "9", *common])
    assert missing.exit_code == 2 and "has no version 9" in missing.output

    shown = runner.invoke(
        app, ["lineage", "models:/cli-model@champion", "--tracking-uri", uri], terminal_width=200
    )
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert (
        out.index("trained model (adapter)") < out.index("exported (merged)") < out.index("registry version")
    )
    assert (
        "gs://b/adapter" in out
        and "models:/cli-model/1" in out
        and "rollback champion: 2 -> 1 by octocat" in out
    )
