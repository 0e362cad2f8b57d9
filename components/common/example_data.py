"""The command line every example's data generator shares (examples/<name>/<name>.py): write the JSONL file
from a seeded generator, or ``--check`` that the committed file is exactly what the generator makes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path


def to_jsonl(rows: list[dict]) -> str:
    """The file format: one sorted-key JSON object per line, ``\\n`` endings, non-ASCII kept."""
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def generator_main(
    argv: list[str] | None,
    *,
    description: str,
    generate: Callable[[int, int], list[dict]],
    default_n: int,
    default_out: Path,
    default_seed: int = 7,
) -> int:
    """``--n``, ``--seed``, ``--out`` and ``--check``; returns the exit status."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=default_n, help=f"number of rows (default {default_n})")
    parser.add_argument(
        "--seed", type=int, default=default_seed, help=f"random seed (default {default_seed})"
    )
    parser.add_argument("--out", type=Path, default=default_out, help=f"JSONL path (default {default_out})")
    parser.add_argument("--check", action="store_true", help="verify --out matches a fresh generation")
    args = parser.parse_args(argv)

    data = to_jsonl(generate(args.n, args.seed)).encode("utf-8")
    if args.check:
        if not args.out.is_file():
            print(f"error: {args.out} does not exist; run without --check to create it", file=sys.stderr)
            return 1
        if args.out.read_bytes() != data:
            print(
                f"error: {args.out} differs from a fresh generation (--n {args.n} --seed {args.seed}); "
                "regenerate it by running this script without --check",
                file=sys.stderr,
            )
            return 1
        print(f"ok: {args.out} matches ({args.n} rows, seed {args.seed})")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.n} rows to {args.out}")
    return 0
