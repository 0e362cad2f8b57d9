"""Provenance stamped on every artifact's metadata: what it is (content hash), how it was made (config
hash, package version, git SHA), from what (the upstream artifacts' hashes) and where (host, container,
image)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from components.common.home import repo_root

_CHUNK = 1 << 20  # bytes read at a time


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_path(path: str | Path, exclude: tuple[str, ...] = ()) -> str:
    """Hash a file, or a folder as the sorted list of (relative path, file hash): renames count.

    ``exclude``: relative paths left out (documents written beside weights, such as a model card)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(
        p for p in path.rglob("*") if p.is_file() and p.relative_to(path).as_posix() not in exclude
    ):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slmforge")
    except PackageNotFoundError:
        return "0+unknown"


def git_sha() -> str:
    """The source revision: $SLMFORGE_GIT_SHA (set in images and CI) or the checkout's HEAD."""
    if sha := os.environ.get("SLMFORGE_GIT_SHA"):
        return sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/")


def runtime() -> dict[str, Any]:
    """Where this step ran: the host name, the container (its id, read from the container's own mounts
    under /proc/self/mountinfo; "" outside a container), the project image it was built as
    ($SLMFORGE_IMAGE, set by images/*/Dockerfile; "" elsewhere) and the uid it ran as."""
    import socket

    try:
        found = _CONTAINER_ID.search(Path("/proc/self/mountinfo").read_text(encoding="utf-8"))
    except OSError:
        found = None
    return {
        "hostname": socket.gethostname(),
        "container_id": found.group(1) if found else "",
        "image": os.environ.get("SLMFORGE_IMAGE", ""),
        "uid": os.getuid(),
    }


def stamp(metadata: dict[str, Any], path: str | Path, *, config_hash: str, upstream: dict[str, str]) -> str:
    """Write provenance into an artifact's metadata dict; return the artifact's content hash.

    ``upstream`` maps an input name to that input's content hash (its lineage)."""
    digest = sha256_path(path)
    metadata.update(
        {
            "sha256": digest,
            "config_hash": config_hash,
            "slmforge_version": package_version(),
            "git_sha": git_sha(),
            "upstream": dict(upstream),
            "runtime": runtime(),
        }
    )
    return digest


# The packages whose versions decide a run's numbers (training, decoding, the pipeline runner).
STACK = ("torch", "transformers", "tokenizers", "trl", "peft", "accelerate", "datasets", "xgrammar", "kfp")


def stack_versions() -> dict[str, str]:
    """{package: installed version} for ``STACK`` ("" where one is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in STACK:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out


def lock_sha256() -> str:
    """sha256 of the checkout's requirements.lock (the environment a run was meant to have), or ""."""
    lock = repo_root() / "requirements.lock"
    return sha256_file(lock) if lock.is_file() else ""
