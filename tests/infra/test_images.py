"""images/: both Dockerfiles lint clean with hadolint, follow the image rules (multi-stage, bases pinned by
digest, non-root, the git SHA from a build arg, install torch at images/torch.txt's version and then
requirements.lock exactly), and send only what they copy. The DockerRunner wiring is checked
without an engine; building the images and running the pipeline in them is the Docker tier
(tests/docker, `make test-docker`)."""

from __future__ import annotations

import re
import subprocess

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
    """Both images run images/install.sh: a venv, torch at images/torch.txt's version (cpu: the CPU build;
    trainer: $TORCH, cuda by default), the lock exactly, then the project with pip check."""
    ops = instructions(dockerfile(kind))
    assert ("COPY", "requirements.lock images/torch.txt images/install.sh /tmp/") in ops
    steps = [
        re.search(r"/tmp/install\.sh (.*)$", a).group(1) for op, a in ops if op == "RUN" and "install.sh" in a
    ]
    torch = "torch cpu" if kind == "cpu" else 'torch "$TORCH"'
    project = "project" if kind == "cpu" else "project gpu"
    assert [s.split()[0] for s in steps] == ["venv", "torch", "lock", "project"], steps
    assert steps[1] == torch and steps[3] == project, steps
    if kind == "trainer":
        assert ("ARG", "TORCH=cuda") in ops
    # downloads: pip's cache and the CA bundle are mounts (never in a layer)
    for op, a in ops:
        if op == "RUN" and re.search(r"install\.sh (torch|lock)", a):
            assert (
                "--mount=type=cache,target=/root/.cache/pip" in a and "--mount=type=secret,id=ca_bundle" in a
            )


def test_install_script_installs_exactly():
    script = (IMAGES / "install.sh").read_text(encoding="utf-8")
    lock = re.search(r"^  lock\) (.*) ;;$", script, re.M).group(1)
    assert "--no-deps --require-hashes -r /tmp/requirements.lock" in lock
    project = script[script.index("  project)") :]
    assert "--no-deps --no-build-isolation -e" in project and "pip check" in project
    assert "PIP_CERT=/run/secrets/ca_bundle" in script  # the secret, only where it was passed
    out = subprocess.run(["sh", IMAGES / "install.sh", "torch", "rocm"], capture_output=True, text=True)
    assert out.returncode == 2 and "use cpu or cuda" in out.stderr, out.stderr


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
    sources = {
        re.sub(r"\[(\w)\]", r"\1", s).rstrip("/") for srcs in copies for s in srcs
    }  # wheel[s]: optional
    assert sources <= allowed, sources - allowed
    assert not allowed & {".venv", ".git", ".slmforge", ".venv-tools"}


def test_docker_runner_mounts_home_and_data_and_runs_as_caller(tmp_path):
    """Steps run as the caller, or as the images' own user (uid 1000) when the caller is root, never as
    root: a root caller's home and run folder are then handed to that user."""
    import os

    from kfp import local

    from pipelines.local import IMAGE_UID, _runner, docker_run_args

    home, cwd, run = tmp_path / "home", tmp_path / "work", tmp_path / "run"
    cwd.mkdir()
    run.mkdir()
    (home / "models").mkdir(parents=True)
    args = docker_run_args(home=home, cwd=cwd, writable=(run,))
    root = os.getuid() == 0
    uid, gid = (IMAGE_UID, IMAGE_UID) if root else (os.getuid(), os.getgid())
    assert args["user"] == f"{uid}:{gid}"
    for folder in (home, home / "models", run):
        assert (folder.stat().st_uid, folder.stat().st_gid) == (uid, gid), folder
    assert cwd.stat().st_uid == os.getuid()  # the working folder is mounted read-only, left as it is
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
