"""A signal to a step's container reaches the component's Python process (issue 14, class 15).

KFP's lightweight command runs Python under ``sh -ec``; in a container sh is PID 1, and a SIGTERM to it
(preemption, a stopped pod) never reaches the trainer, which then saves no checkpoint. The project's
``components.images.component`` makes Python replace the shell (``exec``). These tests run a component's
own compiled command and arguments as a process, the way kfp.local and the Vertex launcher start it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.images import CPU_IMAGE, component, exec_python

ROOT = Path(__file__).resolve().parents[2]


@component(CPU_IMAGE)
def wait_for_sigterm(marker_dir: str):
    """Write its pid, then wait; on SIGTERM write ``got-sigterm`` and exit 143 (what the trainer does)."""
    import os
    import signal
    import sys
    import time

    def on_term(signum, frame):
        with open(os.path.join(marker_dir, "got-sigterm"), "w") as fh:
            fh.write("1")
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    with open(os.path.join(marker_dir, "pid"), "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(60)


def _start(op, tmp_path: Path) -> subprocess.Popen:
    container = op.component_spec.implementation.container
    executor_input = {
        "inputs": {"parameterValues": {"marker_dir": str(tmp_path)}},
        "outputs": {"outputFile": str(tmp_path / "executor_output.json")},
    }
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container.args]
    # python3 as this interpreter (tests run in .venv); the command is the compiled one otherwise
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([*container.command, *args], env=env, cwd=tmp_path)


def _wait_for(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.is_file() or not path.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.1)
    return path.read_text()


def test_sigterm_to_the_step_process_reaches_python(tmp_path):
    proc = _start(wait_for_sigterm, tmp_path)
    try:
        pid = int(_wait_for(tmp_path / "pid"))
        assert pid == proc.pid, "the shell is still the step's process: Python runs as its child"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
        assert (tmp_path / "got-sigterm").read_text() == "1"
    finally:
        proc.kill()


def test_every_pipeline_step_execs_python():
    import components
    from components import _COMPONENTS

    for name in _COMPONENTS:
        op = getattr(components, name)
        container = op.component_spec.implementation.container
        if container.command[:3] == ["python3", "-m", "components.train.custom_job"]:
            continue  # the multi-node launcher: a plain Python command already
        assert "exec python3 -m kfp.dsl.executor_main" in container.command[2], name


def test_an_unknown_kfp_command_is_refused_not_left_unwrapped():
    with pytest.raises(RuntimeError, match="exec_python"):
        exec_python(["sh", "-c", "python3 -m something.else"])
