"""images/: both Dockerfiles lint clean with hadolint, follow the image rules (multi-stage, bases pinned by
digest, non-root, the git SHA from a build arg, install torch at images/torch.txt's version and then
requirements.lock exactly), and send only what they copy. The DockerRunner wiring is checked
without an engine; building and running the images is skipped where no engine answers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from infra_tools import REPO, docker_engine_answers, run_tool, tool

IMAGES = REPO / "images"
KINDS = ("cpu", "trainer")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def dockerfile(kind: str) -> str:
    return (IMAGES / kind / "Dockerfile").read_text(encoding="utf-8")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n\s*", " ", "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#"))
    )
    return [(m.group(1).upper(), m.group(2)) for m in re.finditer(r"^(\w+)\s+(.*)$", joined, re.M)]


def test_hadolint_finds_nothing():
    out = run_tool([tool("lint", "hadolint"), "--no-color", *(IMAGES / k / "Dockerfile" for k in KINDS)])
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_hadolint_does_report_a_finding():
    """The check above can fail: the same call flags a Dockerfile with an unpinned base and root user."""
    bad = "FROM python:latest\nRUN pip install torch\n"
    out = run_tool([tool("lint", "hadolint"), "--no-color", "-"], input=bad)
    assert out.returncode != 0 and "DL3007" in out.stdout, out.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_multi_stage_bases_pinned_by_digest(kind):
    ops = instructions(dockerfile(kind))
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for op, a in ops if op == "ARG" and "=" in a)
    froms = [a.split()[0] for op, a in ops if op == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    stages = {a.split()[-1] for op, a in ops if op == "FROM" and " AS " in a.upper()}
    for ref in froms:
        if ref in stages:
            continue  # FROM an earlier stage of this file
        image = args.get(ref.strip("${}"), ref)
        assert DIGEST.search(image), f"{kind}: base {image} is not pinned by digest"


@pytest.mark.parametrize("kind", KINDS)
def test_runs_as_non_root_with_git_sha(kind):
    ops = instructions(dockerfile(kind))
    users = [a for op, a in ops if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    final = ops[max(i for i, (op, _) in enumerate(ops) if op == "FROM") :]
    assert ("ARG", "SLMFORGE_GIT_SHA=unknown") in final
    assert any(op == "ENV" and "SLMFORGE_GIT_SHA=${SLMFORGE_GIT_SHA}" in a for op, a in final)


@pytest.mark.parametrize("kind", KINDS)
def test_installs_torch_then_the_lock_exactly(kind):
    ops = instructions(dockerfile(kind))
    pip = [a for op, a in ops if op == "RUN" and "pip install" in a]
    assert ("COPY", "requirements.lock images/torch.txt /tmp/") in ops
    torch = [i for i, a in enumerate(pip) if "torch==$(sed -n 's/^torch==//p' /tmp/torch.txt)" in a]
    lock = [i for i, a in enumerate(pip) if "--require-hashes -r /tmp/requirements.lock" in a]
    assert torch and lock and torch[0] < lock[0], pip
    assert "--no-deps" in pip[lock[0]]
    # the project itself adds nothing beyond the lock, and pip check proves the lock meets its requirements
    project = [a for a in pip if re.search(r"-e (\.|\"\.\[gpu\]\")", a)]
    assert project and all("--no-deps" in a and "pip check" in a for a in project), pip
    if kind == "cpu":
        assert "download.pytorch.org/whl/cpu" in pip[torch[0]]
    else:
        assert '".[gpu]"' in project[0]


@pytest.mark.parametrize("kind", KINDS)
def test_dockerignore_lets_in_what_the_dockerfile_copies(kind):
    """BuildKit reads Dockerfile.dockerignore beside the Dockerfile; an allowlist that misses a COPY
    source breaks the build, one that lets .venv in sends gigabytes."""
    ignore = (IMAGES / kind / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [r.strip() for r in ignore if r.strip() and not r.startswith("#")]
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copies = [
        a.split()[:-1] for op, a in instructions(dockerfile(kind)) if op == "COPY" and "--from" not in a
    ]
    sources = {s.rstrip("/") for srcs in copies for s in srcs}
    assert sources <= allowed, sources - allowed
    assert not allowed & {".venv", ".git", ".slmforge", ".venv-tools"}


def test_docker_runner_mounts_home_and_data_and_runs_as_caller(tmp_path):
    import os

    from kfp import local

    from pipelines.local import _runner, docker_run_args

    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    args = docker_run_args(home=home, cwd=cwd)
    assert args["user"] == f"{os.getuid()}:{os.getgid()}"
    assert args["environment"]["SLMFORGE_HOME"] == str(home.resolve())
    mounts = {m["Target"]: m for m in args["mounts"]}
    assert mounts[str(home.resolve())]["ReadOnly"] is False
    assert mounts[str(cwd.resolve())]["ReadOnly"] is True
    # the home inside the working folder (the default ./.slmforge): both mounted, each once
    nested = docker_run_args(home=cwd / ".slmforge", cwd=cwd)
    assert sorted(m["Target"] for m in nested["mounts"]) == [
        str(cwd.resolve()),
        str(cwd.resolve() / ".slmforge"),
    ]
    runner = _runner("docker")
    assert isinstance(runner, local.DockerRunner) and runner.container_run_args["user"] == args["user"]


def test_make_images_without_an_engine_says_why():
    if docker_engine_answers():
        pytest.skip("a Docker engine answers here: `make images` would build")
    out = subprocess.run(["make", "-s", "images"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "no Docker engine answers" in out.stdout + out.stderr


@pytest.mark.local
@pytest.mark.slow
def test_demo_runs_in_the_images(tmp_path):
    """`make images` then the demo through DockerRunner: every step in its image."""
    if not docker_engine_answers():
        pytest.skip("no Docker engine answers (`docker info` failed): the images cannot run here")
    from components.images import CPU_IMAGE, TRAINER_IMAGE

    for image in (CPU_IMAGE, TRAINER_IMAGE):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
            pytest.skip(f"{image} is not built: run `make images`")
    cli = Path(sys.executable).with_name("slmforge")
    env = {**__import__("os").environ, "SLMFORGE_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [cli, "run", REPO / "examples" / "travel" / "config.yaml", "--local", "--runner", "docker"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "gate" in out.stdout.lower()
