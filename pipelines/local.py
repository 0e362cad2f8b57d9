"""Run a pipeline on this machine through kfp.local: the same components and DAG that run on Vertex.

SubprocessRunner runs each task as a Python subprocess of the current environment (use_venv=False, so
the installed slmforge package is importable); DockerRunner runs each task in its component's image
where a Docker engine answers. Resources, accelerators and retries are ignored locally (KFP does so).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class LocalRun:
    """What a local run produced: where, the pipeline's outputs, and the registration record if any."""

    run_dir: Path
    log_path: Path
    seconds: float
    candidate_metrics: dict[str, Any]
    base_metrics: dict[str, Any]
    gate_passed: bool
    gate_reasons: str
    registered: dict[str, Any] | None = field(default=None)
    # every baseline that was scored (base, retrieval, champion when one is registered): name -> metrics
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)


# The tasks that score a baseline, by baseline name (pipelines/finetune.py baselines_and_gate).
BASELINE_TASKS = {
    "base": "evaluate-base-op",
    "retrieval": "retrieval-baseline-op",
    "champion": "evaluate-champion-op",
}


def baseline_metrics(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The metrics of each baseline a run scored, read from its tasks' executor outputs."""
    out = {}
    for name, task in BASELINE_TASKS.items():
        path = run_dir / task / "executor_output.json"
        if not path.is_file():
            continue
        artifacts = json.loads(path.read_text(encoding="utf-8")).get("artifacts", {})
        found = artifacts.get("metrics", {}).get("artifacts", [])
        metrics = found[0].get("metadata", {}) if found else {}
        if metrics and metrics.get("available", 1):  # champion: {"available": 0} until one is registered
            out[name] = metrics
    return out


_ERROR = re.compile(r"^\s*((?:[A-Za-z_][\w.]*)?(?:Error|Exception|Failed|Exit)\w*: .+)$")


def failure_lines(log: str, tail: int = 25) -> tuple[str, list[str]]:
    """From a failed run's log: the last error a step raised (``DataError: 5 of 205 rows rejected ...``)
    and the log's last ``tail`` lines without terminal colour codes."""
    lines = [_ANSI.sub("", line) for line in log.splitlines()]
    # the step's own error comes before kfp.local says the task failed (and wraps it in a RuntimeError)
    end = next((i for i, line in enumerate(lines) if "finished with status FAILURE" in line), len(lines))
    errors = [m.group(1) for line in lines[:end] if (m := _ERROR.match(line))]
    errors = errors or [m.group(1) for line in lines if (m := _ERROR.match(line))]
    return (errors[-1] if errors else ""), lines[-tail:]


class _LogSink(io.TextIOBase):
    """Takes everything kfp.local prints (its logs and the tasks' output), keeps it in a log file, and
    calls ``on_event(task, state)`` when a task starts or finishes, and with ``progress <detail>`` while the
    train step runs (steps, loss, ETA), so a CLI can show progress."""

    def __init__(self, log, on_event: Callable[[str, str], None] | None):
        self._log, self._on_event, self._buffer = log, on_event, ""

    def write(self, text: str) -> int:
        self._log.write(text)
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            plain = _ANSI.sub("", line)
            if self._on_event and (m := re.search(r"Executing task '([^']+)'", plain)):
                self._on_event(m.group(1), "running")
            elif self._on_event and (m := re.search(r"Task '([^']+)' finished with status (\w+)", plain)):
                self._on_event(m.group(1), m.group(2).lower())
            elif self._on_event and (m := re.search(r"train progress: (step .*)$", plain)):
                self._on_event("train-op", f"progress {m.group(1)}")  # components/train/watch.py PROGRESS
        return len(text)

    def flush(self) -> None:
        self._log.flush()


# The images' own user (images/*/Dockerfile): a step runs as it when the caller is root.
IMAGE_UID = 1000


class DockerUnavailable(RuntimeError):
    """The Docker runner cannot start: no engine answers, or an image the pipeline needs is not built."""


def check_docker(images: tuple[str, ...] | None = None) -> None:
    """Raise DockerUnavailable, saying what to do, unless an engine answers and every image is present."""
    import docker

    from components.images import CPU_IMAGE, TRAINER_IMAGE

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # docker raises its own errors, requests' or a plain OSError, by version
        raise DockerUnavailable(
            f"--runner docker: no Docker engine answers ({type(e).__name__}); start one (make test-docker "
            "starts dockerd where it can) or run with --runner subprocess"
        ) from None
    try:
        tags = {t for image in client.images.list() for t in image.tags}
    finally:
        client.close()
    missing = [i for i in images or (CPU_IMAGE, TRAINER_IMAGE) if i not in tags]
    if missing:
        raise DockerUnavailable(
            f"--runner docker: image {', '.join(missing)} is not built here; build the images with "
            "`make images` (on a machine without a GPU or registry access: `make base-image` then "
            "`make images BASE_IMAGE=$(cat build/docker/base-image) TRAINER_TORCH=cpu`)"
        )


def docker_run_args(
    home: Path | None = None, cwd: Path | None = None, writable: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """How each task's container runs under DockerRunner (kfp mounts only the pipeline root itself).

    As the calling user, so what tasks write in the mounted folders stays the user's; a root caller's
    tasks run as the images' own non-root user (uid 1000), which is then given $SLMFORGE_HOME and the
    ``writable`` folders (the run's pipeline root). $SLMFORGE_HOME (model cache, MLflow store) is mounted
    read-write and the working folder (where relative data paths in a config point) read-only, each at its
    own path, so the absolute paths in the pipeline parameters mean the same inside and out.
    """
    from docker.types import Mount

    from components.common.home import slmforge_home

    home = (home or slmforge_home()).resolve()
    cwd = (cwd or Path.cwd()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    mounts = [Mount(str(home), str(home), type="bind")]
    if cwd != home and home not in cwd.parents:  # the home may sit inside cwd: both mount, nested
        mounts.insert(0, Mount(str(cwd), str(cwd), type="bind", read_only=True))
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        uid = gid = IMAGE_UID
        for folder in (home, *writable):
            _chown_tree(folder, uid, gid)
    return {
        "user": f"{uid}:{gid}",
        # HOME: the calling uid has no home in the image; caches (Hugging Face, matplotlib) go to /tmp.
        "environment": {"SLMFORGE_HOME": str(home), "HOME": "/tmp", "OMP_NUM_THREADS": "1"},
        "mounts": mounts,
    }


def _chown_tree(folder: Path, uid: int, gid: int) -> None:
    for path in (folder, *folder.rglob("*")):
        os.chown(path, uid, gid, follow_symlinks=False)


def _runner(kind: str, writable: tuple[Path, ...] = ()):
    from kfp import local

    if kind == "subprocess":
        return local.SubprocessRunner(use_venv=False)
    if kind == "docker":
        return local.DockerRunner(**docker_run_args(writable=writable))
    raise ValueError(f"runner {kind!r}: use subprocess or docker")


def without_retries(pipeline):
    """A copy of ``pipeline`` whose tasks do not retry. kfp.local (2.17) honours retry policies with their
    backoff, and on Vertex they are there for preemption and transient infrastructure; a local failure is
    neither, so retrying it only waits (a data-stage failure sat ~3 minutes in backoff before failing)."""
    import copy

    local_copy = copy.deepcopy(pipeline)
    spec = local_copy.pipeline_spec
    dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]
    for dag in dags:
        for task in dag.tasks.values():
            task.ClearField("retry_policy")
    return local_copy


def run_pipeline_local(
    params: dict[str, Any],
    runs_root: str | Path,
    *,
    pipeline: str = "finetune",
    runner: str = "subprocess",
    on_event: Callable[[str, str], None] | None = None,
    echo: bool = False,
) -> LocalRun:
    """Run ``pipeline`` with ``params`` under a fresh folder of ``runs_root``; raise on any task failure.

    With ``echo`` the full kfp.local log streams to the terminal; otherwise it goes to the run's
    ``pipeline.log`` and only task events reach ``on_event``."""
    from kfp import local

    from pipelines import REGISTRY

    if int(params.get("train_nodes", 1)) > 1:
        raise ValueError(
            f"train.nodes={params['train_nodes']} trains on a Vertex AI custom job with worker pools, which a "
            "local run cannot start; locally use train.nodes: 1 (train.processes_per_node sets the processes)"
        )
    os.environ.setdefault(
        "OMP_NUM_THREADS", "1"
    )  # tasks inherit it: 1 thread is the fast, stable choice on CPU
    if runner == "docker":
        check_docker()
    root = Path(runs_root).resolve() / time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=_runner(runner, writable=(root,)), pipeline_root=str(root), raise_on_error=True)
    log_path = root / "pipeline.log"
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8", buffering=1) as log:  # line-buffered: `tail -f` works
        sink = _LogSink(log, on_event)
        redirect = contextlib.nullcontext() if echo else contextlib.redirect_stdout(sink)
        with redirect, warnings.catch_warnings():
            # Expected locally, said once here instead of per task: SubprocessRunner ignores base images
            # and resource/accelerator settings (the compiled YAML carries them; tests assert on it).
            warnings.filterwarnings("ignore", message=r".*custom or non-Python base image")
            warnings.filterwarnings("ignore", message=r".*have no effect in the current local runner")
            task = without_retries(REGISTRY[pipeline])(**params)
    seconds = time.perf_counter() - start
    run_dir = next(d for d in root.iterdir() if d.is_dir())
    registered_file = run_dir / "register-op" / "registered"
    run = LocalRun(
        run_dir=run_dir,
        log_path=log_path,
        seconds=seconds,
        candidate_metrics=dict(task.outputs["candidate_metrics"].metadata),
        base_metrics=dict(task.outputs["base_metrics"].metadata),
        gate_passed=bool(task.outputs["gate_passed"]),
        gate_reasons=str(task.outputs["gate_reasons"]),
        registered=json.loads(registered_file.read_text()) if registered_file.is_file() else None,
        baselines=baseline_metrics(run_dir),
    )
    report = run_dir / "gate-op" / "html_report"
    if report.is_file():  # KFP names the HTML artifact without a suffix; a browser wants .html
        shutil.copyfile(report, run_dir / "report.html")
    summary = run_summary(run, params, pipeline=pipeline, runner=runner)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return run


def run_summary(run: LocalRun, params: dict[str, Any], *, pipeline: str, runner: str) -> dict[str, Any]:
    """What a run's figures are quoted from (README, benchmarks/RESULTS.md, `make drift`): the metrics, the
    gate, the registration, and the machine, threads, versions and lock hash the run had."""
    import platform

    from components.common.provenance import git_sha, lock_sha256, package_version, stack_versions

    return {
        "config_name": params.get("config_name", ""),
        "config_hash": params.get("config_hash", ""),
        "pipeline": pipeline,
        "runner": runner,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": round(run.seconds, 1),
        "run": run.run_dir.name,
        "candidate": run.candidate_metrics,
        "base": run.base_metrics,
        "baselines": run.baselines,
        "gate": {"passed": run.gate_passed, "reasons": run.gate_reasons.splitlines()},
        "registered": (run.registered or {}).get("model_uri", ""),
        "environment": {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
            "python": platform.python_version(),
            "slmforge": package_version(),
            "git_sha": git_sha(),
            "lock_sha256": lock_sha256(),
            "versions": stack_versions(),
        },
    }


# Where a local run's train step keeps its checkpoints (components/train/component.py: beside the model).
CHECKPOINTS_GLOB = "*/train-op/checkpoints"


@dataclass(frozen=True)
class Leftover:
    """A complete training checkpoint an earlier local run left (it was stopped before it finished)."""

    run: str  # the run's folder name under runs_root
    step: int
    checkpoints: Path  # the folder ``resume_from`` takes
    key: dict[str, str]


def leftovers(runs_root: str | Path, ref: str = "") -> list[Leftover]:
    """Complete checkpoints left by earlier local runs under ``runs_root``, newest run first; with ``ref``
    (a run's folder name under runs_root, or a path to one) only that run's."""
    from components.train.checkpoints import checkpoint_step, latest_complete, read_run_key

    root = Path(runs_root)
    if ref:
        path = Path(ref) if Path(ref).is_dir() else root / ref
        runs = [path.parent if path.name.startswith("slmforge-") else path]
    else:
        runs = sorted((d for d in root.iterdir() if d.is_dir()), reverse=True) if root.is_dir() else []
    found = []
    for run in runs:
        for folder in sorted(run.glob(CHECKPOINTS_GLOB)):
            latest = latest_complete(folder)
            if latest is not None:
                found.append(Leftover(run.name, checkpoint_step(latest) or 0, folder, read_run_key(folder)))
    return found
