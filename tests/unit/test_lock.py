"""requirements.lock, the one lock of dev, CI and the images: every requirement slmforge declares (runtime,
`dev` and `gpu` extras) is pinned there with hashes and the pin satisfies it; torch stays outside it at the
version images/torch.txt pins; and this venv is exactly what the lock says. `make lock-check` (CI) also
re-resolves pyproject against the index; these checks run offline."""

from __future__ import annotations

import re
from importlib.metadata import distribution, distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")


def lock_pins(text: str) -> dict[str, str]:
    """{canonical name: version} of every pin in a requirements file written by `uv pip compile`, each
    followed by at least one --hash line (a pin without a hash fails here, as pip --require-hashes would)."""
    pins, lines = {}, text.splitlines()
    for i, line in enumerate(lines):
        m = PIN.match(line)
        if m:
            assert i + 1 < len(lines) and "--hash=sha256:" in lines[i + 1], f"{m.group(1)} has no hash"
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def test_lock_pins_every_declared_requirement():
    pins = lock_pins((REPO / "requirements.lock").read_text(encoding="utf-8"))
    assert len(pins) > 100
    assert "torch" not in pins  # installed first, by machine (CPU or CUDA wheel)
    for line in distribution("slmforge").requires or []:
        req = Requirement(line)
        envs = [{"extra": e} for e in ("", "dev", "gpu")]
        if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
            continue  # another extra (unsloth) or platform
        name = canonicalize_name(req.name)
        if name == "torch":
            torch = (REPO / "images" / "torch.txt").read_text(encoding="utf-8")
            version = re.search(r"^torch==(\S+)$", torch, re.M).group(1)
            assert req.specifier.contains(version), (req, version)
            continue
        assert name in pins, f"{name} ({req}) is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])


def test_this_venv_is_the_lock():
    """What `make setup` installed is what the lock says, version for version."""
    pins = lock_pins((REPO / "requirements.lock").read_text(encoding="utf-8"))
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    wrong = {n: (v, installed.get(n)) for n, v in pins.items() if installed.get(n) != v}
    assert not wrong, f"venv differs from requirements.lock (locked, installed): {wrong}; run `make setup`"


def test_a_pin_without_a_hash_is_refused():
    with pytest.raises(AssertionError, match="kfp has no hash"):
        lock_pins("kfp==2.16.1 \\\n    # via slmforge\n")
