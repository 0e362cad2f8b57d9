"""What every benchmark prints with its numbers: the machine and the code they were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """CPU architecture and model, and the cores this process may use."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}{f' ({model})' if model else ''}, {nproc} cores"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages ("?" where the system has none)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def package_version(name: str) -> str:
    """The installed version of distribution ``name``, or "not installed"."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(*names: str) -> str:
    """``name version`` for each distribution, comma-separated."""
    return ", ".join(f"{name} {package_version(name)}" for name in names)


def code_version(*paths: str) -> str:
    """HEAD, and whether ``paths`` (relative to the repository) had uncommitted changes when this ran."""
    try:
        git = ["git", "-C", str(REPO)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run([*git, "status", "--porcelain", *paths], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + (
        f" + uncommitted changes in {', '.join(paths)}" if dirty.stdout.strip() else ""
    )
