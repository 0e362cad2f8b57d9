"""Print the pins the images install with: slmforge's runtime dependency closure as installed in this venv.

``make constraints`` runs it with .venv's Python and writes images/constraints.txt. Only the packages
``pip install .`` needs are listed (not the dev extra, not whatever else the venv holds), each as
``name==version`` with the local label dropped (``torch==2.13.0``, not ``2.13.0+cpu``): a pin without a
label matches the CPU wheel in images/cpu and PyPI's CUDA wheel in images/trainer alike. The ``gpu``
extra (bitsandbytes, unsloth) cannot be installed on a CPU machine, so it is not pinned here; the trainer
image resolves it against these pins.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = "slmforge"
# Versions that follow the torch build rather than this venv: the CPU venv gets the newest triton (xgrammar
# asks for any), while PyPI's CUDA torch 2.13.0 pins triton==3.7.1; a pin here would break the trainer.
FOLLOW_TORCH = {"triton"}


def runtime_closure(root: str = ROOT) -> dict[str, str]:
    """{canonical name: installed version} of every package ``root`` needs at run time (no extras)."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            # A requirement whose marker held but is not installed: the venv is broken, say which.
            raise SystemExit(
                f"{name} is required but not installed in {sys.prefix}: run `make setup`"
            ) from None
        if canonicalize_name(name) not in {ROOT, *FOLLOW_TORCH}:
            pins[canonicalize_name(name)] = dist.version.split("+", 1)[0]
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    return pins


def main() -> int:
    pins = runtime_closure()
    py = ".".join(map(str, sys.version_info[:2]))
    print(f"# slmforge's runtime pins, from a working venv (Python {py}, {sys.platform}).")
    print(
        "# Written by `make constraints` (images/constraints.py); the images install with `pip install -c` it."
    )
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
