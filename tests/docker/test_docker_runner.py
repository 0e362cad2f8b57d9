"""The Docker tier (`make test-docker`): the finetune pipeline through kfp.local's DockerRunner, every step
inside a container of the project's images, on a shortened recipe, against the same recipe through the
SubprocessRunner. `make test-docker` starts an engine and builds the images first; run alone, this module
skips where no engine answers and fails, naming the make command, where the images are missing."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "travel" / "config.yaml"

pytestmark = [pytest.mark.docker, pytest.mark.local]

# Shorter than tests/local's SHORT (two runs here, each step a container start): every stage still runs,
# and the gate (not worse than base) lets export and registration run too.
RECIPE = (
    "train.max_steps=120",
    "train.checkpoint_steps=60",
    "eval.max_examples=24",
    "gates.rules=[{metric: exact_match, not_worse_than: base}]",
)


@pytest.fixture(scope="module")
def docker_client():
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # no engine: the tier's make target starts one
        pytest.skip(f"no Docker engine answers ({type(e).__name__}); `make test-docker` starts one")
    from pipelines.local import DockerUnavailable, check_docker

    try:
        check_docker()
    except DockerUnavailable as e:
        pytest.fail(str(e))
    yield client
    client.close()


def _run(runner: str, tmp: Path, monkeypatch) -> tuple:
    from components.common.config_load import load_config
    from pipelines.local import run_pipeline_local
    from pipelines.parameters import pipeline_parameters

    home = tmp / runner / "home"
    monkeypatch.setenv("SLMFORGE_HOME", str(home))
    params = pipeline_parameters(load_config(DEMO, RECIPE))
    return run_pipeline_local(params, tmp / runner / "runs", runner=runner), home


def _step_runtimes(run_dir: Path) -> dict[str, list[dict]]:
    """{task: [runtime metadata of each artifact it stamped]} from the tasks' executor outputs."""
    out = {}
    for executor_output in sorted(run_dir.glob("*/executor_output.json")):
        artifacts = json.loads(executor_output.read_text()).get("artifacts", {})
        stamped = [
            a["metadata"]["runtime"]
            for output in artifacts.values()
            for a in output.get("artifacts", [])
            if "runtime" in a.get("metadata", {})
        ]
        if stamped:
            out[executor_output.parent.name] = stamped
    return out


def _scores(metrics: dict) -> dict:
    """The metrics that must not depend on where a step ran (timings left out)."""
    return {k: v for k, v in metrics.items() if not any(t in k for t in ("seconds", "per_s", "wall", "_s/"))}


@pytest.fixture(scope="module")
def runs(docker_client, tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("docker-tier")
    started = int(time.time()) - 1
    try:
        docker_run, _ = _run("docker", tmp, monkeypatch)
        until = int(time.time()) + 1
        subprocess_run, _ = _run("subprocess", tmp, monkeypatch)
    finally:
        monkeypatch.undo()
    # every container the engine started meanwhile, with the image it was started from
    events = docker_client.events(
        since=started, until=until, filters={"type": "container", "event": "start"}, decode=True
    )
    containers = {e["id"]: e["from"] for e in events}
    return docker_run, subprocess_run, containers


def test_every_step_ran_in_a_container_of_the_project_images(runs):
    from components.images import CPU_IMAGE, TRAINER_IMAGE

    docker_run, _, containers = runs
    runtimes = _step_runtimes(docker_run.run_dir)
    assert {"ingest-op", "split-op", "train-op", "export-op"} <= set(runtimes), sorted(runtimes)
    expected_uid = 1000 if os.getuid() == 0 else os.getuid()  # never root inside
    for task, stamped in runtimes.items():
        for rt in stamped:
            assert rt["container_id"] in containers, (task, rt, sorted(containers))
            # the engine's record of what the container was started from = the image the step names
            assert containers[rt["container_id"]] == rt["image"], (task, rt)
            assert rt["image"] in {CPU_IMAGE, TRAINER_IMAGE}, (task, rt)
            assert rt["hostname"] != socket.gethostname() and rt["container_id"].startswith(rt["hostname"])
            assert rt["uid"] == expected_uid != 0, (task, rt)
    assert {rt["image"] for rt in runtimes["train-op"]} == {TRAINER_IMAGE}
    assert {rt["image"] for rt in runtimes["split-op"]} == {CPU_IMAGE}


def test_the_images_run_the_same_recipe_to_the_same_metrics(runs):
    docker_run, subprocess_run, _ = runs
    assert docker_run.gate_passed and docker_run.registered and docker_run.registered["created"]
    assert _scores(docker_run.candidate_metrics) == _scores(subprocess_run.candidate_metrics)
    assert _scores(docker_run.base_metrics) == _scores(subprocess_run.base_metrics)
    for rt in [r for stamped in _step_runtimes(subprocess_run.run_dir).values() for r in stamped]:
        assert rt["container_id"] == "" and rt["image"] == ""  # the subprocess runs stayed on the host
    summary = json.loads((docker_run.run_dir / "summary.json").read_text())
    assert summary["runner"] == "docker" and summary["candidate"] == docker_run.candidate_metrics


def test_docker_images_lists_the_project_images(docker_client):
    from components.images import CPU_IMAGE, TRAINER_IMAGE

    sizes = {t: i.attrs["Size"] for i in docker_client.images.list() for t in i.tags}
    for image in (CPU_IMAGE, TRAINER_IMAGE):
        assert sizes[image] > 500e6, (image, sizes.get(image))  # torch and the lock are in it
        labels = docker_client.images.get(image).labels
        assert labels["org.opencontainers.image.revision"] not in ("", "unknown"), labels
