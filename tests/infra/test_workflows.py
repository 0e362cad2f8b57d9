""".github/: zizmor (pedantic, offline) finds nothing, the workflows match GitHub's schema, every action
is pinned by commit SHA, permissions are least (nothing at the top, per job only what it uses), every
workflow has a concurrency group, and every command a workflow runs exists: make targets in the
Makefile, compile.py flags, the console scripts and their options."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import yaml
from infra_tools import REPO, run_tool, tool

GITHUB = REPO / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def load(name: str) -> dict:
    return yaml.safe_load((GITHUB / "workflows" / name).read_text(encoding="utf-8"))


def triggers(wf: dict) -> dict:
    on = wf.get("on", wf.get(True))  # PyYAML reads the bare key `on` as True
    return on if isinstance(on, dict) else {k: None for k in ([on] if isinstance(on, str) else on)}


def run_scripts(wf: dict) -> list[str]:
    return [s["run"] for job in wf["jobs"].values() for s in job.get("steps", []) if "run" in s]


def commands(wf: dict) -> list[list[str]]:
    """Each command line of the run: scripts (continuations joined), split like a shell would."""
    lines = []
    for script in run_scripts(wf):
        for line in re.sub(r"\\\n\s*", " ", script).splitlines():
            for part in re.split(r"\s*(?:\|\||&&|\||;)\s*", line.strip()):
                try:
                    lines.append(shlex.split(part))
                except ValueError:
                    continue
    return [c for c in lines if c]


def test_workflow_names():
    assert [p.name for p in WORKFLOWS] == [
        "ci.yml",
        "images.yml",
        "pipeline.yml",
        "promote.yml",
        "scheduled.yml",
    ]


def test_zizmor_pedantic_finds_nothing():
    out = run_tool([tool("lint", "zizmor"), "--offline", "--no-progress", "--persona", "pedantic", GITHUB])
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "No findings" in out.stdout, out.stdout


def test_zizmor_does_report_a_finding(tmp_path):
    """The check above can fail: an unpinned action with a write-all token is reported."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - uses: actions/checkout@v4\n"
    )
    out = run_tool([tool("lint", "zizmor"), "--offline", "--no-progress", bad])
    assert out.returncode != 0 and "unpinned-uses" in out.stdout, out.stdout


def test_schema():
    out = run_tool(
        [tool("lint", "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *WORKFLOWS]
    )
    assert out.returncode == 0, out.stdout + out.stderr
    out = run_tool(
        [tool("lint", "check-jsonschema"), "--builtin-schema", "vendor.dependabot", GITHUB / "dependabot.yml"]
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_pinned_by_sha_with_version(path):
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*(?:-\s+)?uses:\s+(\S+)(.*)$", line)
        if not m or m.group(1).startswith("./"):
            continue
        assert PINNED.match(m.group(1)), f"{path.name}: {m.group(1)} is not pinned by commit SHA"
        assert re.search(r"#\s*v\d+(\.\d+)*", m.group(2)), f"{path.name}: say which version {m.group(1)} is"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_permissions_and_concurrency(path):
    wf = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert wf["permissions"] == {}, "grant nothing at the top; each job asks for what it uses"
    assert wf["concurrency"]["group"]
    for name, job in wf["jobs"].items():
        perms = job["permissions"]
        writes = {k for k, v in perms.items() if v == "write"}
        assert writes <= {"id-token"}, f"{path.name}:{name} writes {writes}"
        if "id-token" in writes:  # only jobs that authenticate to Google Cloud (or call one that does)
            text = yaml.safe_dump(job)
            assert "google-github-actions/auth" in text or job.get("uses") == "./.github/workflows/images.yml"


def test_ci_lints_tests_compiles_and_uploads():
    wf = load("ci.yml")
    assert {"push", "pull_request"} <= set(triggers(wf))
    cmds = commands(wf)
    assert ["make", "lint"] in cmds and ["make", "test"] in cmds
    assert cmds.index(["make", "lock-check"]) < cmds.index(["make", "lint"])  # the lock first
    assert ["make", "compile"] in cmds  # both targets: Vertex AI Pipelines and KFP on GKE
    uploads = [
        s for s in wf["jobs"]["ci"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")
    ]
    assert uploads and uploads[0]["with"]["path"].split() == [
        "build/pipelines/*.yaml",
        "build/pipelines/kfp/*.yaml",
    ]


def test_scheduled_runs_drift_and_the_quality_tier():
    """Nightly: the demo on the newest allowed versions (not the lock), and the slow full-recipe tests."""
    wf = load("scheduled.yml")
    assert {"schedule", "workflow_dispatch"} <= set(triggers(wf))
    assert ["make", "drift"] in commands(wf) and ["make", "test-slow"] in commands(wf)


def test_pipeline_builds_images_then_compiles_uploads_and_submits():
    wf = load("pipeline.yml")
    on = triggers(wf)
    assert on["push"]["branches"] == ["main"] and "workflow_dispatch" in on
    assert wf["jobs"]["submit"]["needs"] == "images"
    cmds = commands(wf)
    compile_cmd = next(c for c in cmds if c[:2] == [".venv/bin/python", "compile.py"])
    assert compile_cmd[compile_cmd.index("--image-tag") + 1] == "$GITHUB_SHA"
    assert "--image-repo" in compile_cmd
    assert any(c[:1] == [".venv/bin/submit"] and "--wait" in c for c in cmds)
    assert any(c[:1] == ["curl"] and "$TEMPLATE_REPO" in c for c in cmds)
    # images.yml pushes the tag compile.py writes
    images = load("images.yml")
    assert images["jobs"]["build"]["env"]["IMAGE_TAG"] == "${{ github.sha }}"
    assert "workflow_call" in triggers(images)
    assert any(c[:2] == ["make", "images"] for c in commands(images))


def test_pipeline_targets_vertex_or_kfp_by_a_repository_variable():
    """SLMFORGE_BACKEND=kfp compiles for the kfp target and submits to SLMFORGE_KFP_HOST with an ID token
    the auth action mints for the deployer account; unset, everything is as for Vertex. The submit step
    fails with submit (pipefail), not with tee."""
    wf = load("pipeline.yml")
    job = wf["jobs"]["submit"]
    assert job["env"]["BACKEND"] == "${{ vars.SLMFORGE_BACKEND || 'vertex' }}"
    assert job["env"]["KFP_HOST"] == "${{ vars.SLMFORGE_KFP_HOST }}"
    cmds = commands(wf)
    compile_cmd = next(c for c in cmds if c[:2] == [".venv/bin/python", "compile.py"])
    assert compile_cmd[compile_cmd.index("--target") + 1] == "$BACKEND"
    steps = {s.get("name", ""): s for s in job["steps"]}
    token = steps["ID token for the Kubeflow Pipelines API (IAP)"]
    assert token["if"] == "env.BACKEND == 'kfp'" and token["with"]["token_format"] == "id_token"
    submit = steps["Submit and wait"]
    assert submit["env"]["SLMFORGE_KFP_ID_TOKEN"] == "${{ steps.kfp-token.outputs.id_token }}"
    assert submit["run"].lstrip().startswith("set -o pipefail")
    assert 'set -- --kfp-host "$KFP_HOST"' in submit["run"]
    assert steps["Record the run for promote.yml"]["if"] == "env.BACKEND == 'vertex'"


def test_promote_runs_after_the_pipeline_in_the_protected_environment():
    wf = load("promote.yml")
    on = triggers(wf)
    assert on["workflow_run"]["workflows"] == [load("pipeline.yml")["name"]]
    assert on["workflow_run"]["types"] == ["completed"]
    assert {"model", "run", "version"} <= set(on["workflow_dispatch"]["inputs"])
    job = wf["jobs"]["promote"]
    assert job["environment"] == "production"
    assert "github.event.workflow_run.conclusion == 'success'" in job["if"]
    promote = next(c for c in commands(wf) if c[:2] == [".venv/bin/slmforge", "promote"])
    assert {"--config", "--model", "--alias"} <= set(promote) and promote[
        promote.index("--alias") + 1
    ] == "champion"
    script = next(s for s in run_scripts(wf) if "slmforge promote" in s)
    assert "--version" in script and "--run" in script  # through the target array
    assert {"--version", "--run", "--alias"} <= _cli_options("promote")
    auth = next(s for s in job["steps"] if s.get("uses", "").startswith("google-github-actions/auth@"))
    assert auth["with"]["service_account"] == "${{ vars.GCP_PROMOTER_SERVICE_ACCOUNT }}"


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][a-z-]*):", text, re.M))


def _cli_options(command: str) -> set[str]:
    import typer.main

    from pipelines.cli import app

    click_cmd = typer.main.get_command(app).commands[command]
    return {opt for p in click_cmd.params for opt in p.opts}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_command_exists(path):
    """make targets, compile.py flags and the console scripts' subcommands and options are real."""
    targets = _make_targets()
    help_text = subprocess.run(
        [sys.executable, "compile.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    ).stdout
    for cmd in commands(yaml.safe_load(path.read_text(encoding="utf-8"))):
        if cmd[0] == "make":
            assert cmd[1] in targets, f"{path.name}: make {cmd[1]} is not a Makefile target"
        elif cmd[:2] == [".venv/bin/python", "compile.py"]:
            for flag in (a for a in cmd[2:] if a.startswith("--")):
                assert flag in help_text, f"{path.name}: compile.py has no {flag}"
        elif cmd[0] == ".venv/bin/submit":
            flags = {a for a in cmd[1:] if a.startswith("--")}
            assert flags <= _cli_options("submit"), flags - _cli_options("submit")
        elif cmd[0] == ".venv/bin/slmforge":
            flags = {a for a in cmd[2:] if a.startswith("--")}
            assert flags <= _cli_options(cmd[1]), flags - _cli_options(cmd[1])
