"""How long does compiling every pipeline take, and does it stay clear of the ML stack?

Each run is a fresh Python process that does what ``python compile.py`` does (pipelines.compiler.main into a
temporary folder), so every run pays the interpreter start and the imports a user pays. Per run:

  * wall: the child process from spawn to exit, measured here (``time.perf_counter``);
  * import: inside the child, the time to import ``pipelines`` (kfp, the components, the DAG definitions);
  * compile: inside the child, ``compile_all`` for every pipeline in pipelines.REGISTRY;
  * heavy: which of torch, transformers, peft, trl, datasets, mlflow, aiplatform, pyarrow, pandas the child
    had in ``sys.modules`` at the end (the goal: none).

Prints every run and the medians (goal: wall <= 3 s), then a line to paste into benchmarks/RESULTS.md.
Measures; asserts nothing.

    python benchmarks/compile_time.py [--runs 7] [--image-tag TAG]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import code_version, machine  # noqa: E402  (benchmarks/runinfo.py, next to this file)

HEAVY = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "mlflow",
    "google.cloud.aiplatform",
    "pyarrow",
    "pandas",
)

CHILD = """
import json, sys, time
start = time.perf_counter()
import pipelines
from pipelines.compiler import compile_all
imported = time.perf_counter()
paths = compile_all(sys.argv[1], image_tag=sys.argv[2] or None)
done = time.perf_counter()
heavy = [m for m in json.loads(sys.argv[3]) if m in sys.modules]
print(json.dumps({"import_s": imported - start, "compile_s": done - imported, "files": [p.name for p in paths],
                  "heavy": heavy}))
"""


def one_run(out: Path, image_tag: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), image_tag, json.dumps(HEAVY)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    return {"wall_s": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes to time")
    parser.add_argument(
        "--image-tag", default="", help="also rewrite the image tags (compile.py --image-tag)"
    )
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            run = one_run(Path(tmp) / f"run{i}", args.image_tag)
            runs.append(run)
            print(
                f"run {i + 1}: wall {run['wall_s']:.2f} s (import {run['import_s']:.2f} s, compile "
                f"{run['compile_s']:.2f} s), {len(run['files'])} pipelines, heavy modules: {run['heavy'] or 'none'}"
            )
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "import_s", "compile_s")}
    heavy = sorted({m for r in runs for m in r["heavy"]})
    when = time.strftime("%Y-%m-%d")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print()
    print(f"machine: {machine()}, OMP_NUM_THREADS={threads}, python {platform.python_version()}, {when}")
    print(f"code: {code_version('pipelines', 'components')}")
    print(f"pipelines: {', '.join(runs[0]['files'])}")
    print(
        f"median of {len(runs)}: wall {med['wall_s']:.2f} s (goal <= 3 s), import {med['import_s']:.2f} s, "
        f"compile {med['compile_s']:.2f} s; heavy modules imported: {', '.join(heavy) or 'none'}"
    )
    print(f"min / max wall: {min(r['wall_s'] for r in runs):.2f} / {max(r['wall_s'] for r in runs):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
