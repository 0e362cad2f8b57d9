"""The README's demo figures are the recorded demo run's (benchmarks/demo-summary.json, written by
`make demo-record`), rendered by benchmarks/demo_summary.py; that run was made on today's lock and passed
the demo's bar. Editing a figure by hand, or changing the lock without recording a new run, fails here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_summary():
    spec = importlib.util.spec_from_file_location("demo_summary", REPO / "benchmarks" / "demo_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_block_is_rendered_from_the_recorded_summary(demo_summary):
    summary = json.loads(demo_summary.RECORDED.read_text(encoding="utf-8"))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert demo_summary.readme_block(summary) in readme, "README demo block is stale: run `make demo-record`"


def test_recorded_demo_ran_on_this_lock_and_passed_with_margin():
    from components.common.provenance import lock_sha256

    summary = json.loads((REPO / "benchmarks" / "demo-summary.json").read_text(encoding="utf-8"))
    assert summary["environment"]["lock_sha256"] == lock_sha256(), (
        "benchmarks/demo-summary.json was made on another requirements.lock: run `make demo-record`"
    )
    assert summary["config_name"] == "travel-commands" and summary["gate"]["passed"]
    assert summary["candidate"]["exact_match"] >= 0.95 and summary["candidate"]["schema_validity"] == 1.0
    assert summary["registered"].startswith("models:/travel-commands/")


def test_replace_block_keeps_the_rest(demo_summary):
    text = f"before\n{demo_summary.START}\nold\n{demo_summary.END}\nafter\n"
    assert demo_summary.replace_block(text, "NEW") == "before\nNEW\nafter\n"
    with pytest.raises(SystemExit, match="markers"):
        demo_summary.replace_block("no markers", "NEW")
