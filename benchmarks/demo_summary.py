"""Render a run's summary.json (written by every local run, pipelines/local.py) as the README's demo block
and a benchmarks/RESULTS.md row, so the figures quoted there come from a run, never from memory.

    python benchmarks/demo_summary.py                 # newest run under $SLMFORGE_HOME (default .slmforge)
    python benchmarks/demo_summary.py SUMMARY.json    # a given run
    python benchmarks/demo_summary.py --record        # copy it to benchmarks/demo-summary.json and rewrite
                                                      # the README block between the demo-summary markers
    python benchmarks/demo_summary.py --require-pass  # exit 1, naming the versions, when the gate failed

`make demo-record` runs the demo and records it; tests/unit/test_readme_figures.py fails when the README
block differs from the recorded summary, or the summary was made on another lock than requirements.lock.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDED = REPO / "benchmarks" / "demo-summary.json"
README = REPO / "README.md"
START, END = "<!-- demo-summary:start -->", "<!-- demo-summary:end -->"
SHOWN = ("exact_match", "schema_validity", "field_match")  # the demo gate's metrics, in this order


def newest_summary(home: Path) -> Path:
    found = sorted((home / "runs").glob("*/*/summary.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no summary.json under {home / 'runs'}: run `make demo` first")
    return found[-1]


def _fmt(metrics: dict, name: str) -> str:
    value = metrics.get(name)
    return "n/a" if value is None else f"{value:.3f}"


def readme_block(s: dict) -> str:
    """The README's demo paragraph: every figure is read from the summary."""
    env, cand, base = s["environment"], s["candidate"], s["base"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    verdict = "passed" if s["gate"]["passed"] else "FAILED"
    registered = (
        f"`{s['registered']}` got the alias `candidate`." if s["registered"] else "Nothing was registered."
    )
    lines = [
        START,
        f"Measured by `make demo-record` on {s['finished_utc'][:10]} ({env['machine']}, OMP_NUM_THREADS="
        f"{env['omp_num_threads']}, Python {env['python']}, lock sha256 {env['lock_sha256'][:12]}, "
        f"code {env['git_sha'][:7]}): the pipeline took {s['wall_s'] / 60:.1f} min. On the "
        f"{int(cand.get('examples', 0))} held-out rows the candidate scored "
        + ", ".join(f"{m} {_fmt(cand, m)}" for m in SHOWN)
        + f" (constrained decoding; free decoding: exact_match {_fmt(cand, 'free/exact_match')}); the untrained "
        f"base scored exact_match {_fmt(base, 'exact_match')} and the retrieval baseline (the nearest training "
        f"prompt's answer) {_fmt(s.get('baselines', {}).get('retrieval', {}), 'exact_match')}. The gate {verdict}. "
        f"{registered}",
        "",
        "```text",
        *s["gate"]["reasons"],
        "```",
        "",
        f"Versions: {versions}. Source: `benchmarks/demo-summary.json`.",
        END,
    ]
    return "\n".join(lines)


def results_row(s: dict) -> str:
    """A row for RESULTS.md's demo table: date, machine, threads, lock, code, wall, metrics, gate."""
    env, cand = s["environment"], s["candidate"]
    return (
        f"| {s['finished_utc'][:10]} | {env['machine']} | {env['omp_num_threads']} | "
        f"{env['lock_sha256'][:12]} | {env['git_sha'][:7]} | {s['wall_s']:.0f} | "
        + " | ".join(_fmt(cand, m) for m in SHOWN)
        + f" | {'pass' if s['gate']['passed'] else 'FAIL'} |"
    )


def replace_block(text: str, block: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} markers to replace")
    head, rest = text.split(START, 1)
    return head + block + rest.split(END, 1)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", nargs="?", type=Path, help="a run's summary.json (default: the newest)")
    parser.add_argument("--record", action="store_true", help="write benchmarks/demo-summary.json and README")
    parser.add_argument("--require-pass", action="store_true", help="exit 1 when the run's gate failed")
    a = parser.parse_args()
    path = a.summary or newest_summary(Path(os.environ.get("SLMFORGE_HOME", REPO / ".slmforge")))
    summary = json.loads(path.read_text(encoding="utf-8"))
    print(f"# {path}")
    print(readme_block(summary))
    print()
    print(results_row(summary))
    if a.record:
        shutil.copyfile(path, RECORDED)
        README.write_text(replace_block(README.read_text(encoding="utf-8"), readme_block(summary)))
        print(f"recorded: {RECORDED.relative_to(REPO)} and the README block")
    if a.require_pass and not summary["gate"]["passed"]:
        versions = ", ".join(f"{k}=={v}" for k, v in summary["environment"]["versions"].items() if v)
        print(f"the demo's gate FAILED on {versions}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
