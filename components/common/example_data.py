"""What every example's data generator (examples/<name>/<name>.py) shares: rows in paraphrase families, and
the script's command line (write the JSONL file from a seeded generator, or ``--check`` that the committed
file is exactly what the generator makes).

Each generator samples a *family* (one meaning: an intent, a label, a booking), writes 2-3 different
phrasings of it, and has its rule-based labeller (oracle, reader) label every phrasing, raising if the
labeller disagrees with what the generator meant. :func:`family_rows` is that loop; a generator gives it
its own sampling, phrasing and labelling. :func:`command_line` is its ``main``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar


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


F = TypeVar("F")  # a family: what all of its rows mean
S = TypeVar("S")  # one phrasing of a family, as ``say`` returns it


def _itself(value: Any) -> Any:
    return value


def family_rows(
    name: str,
    n: int,
    seed: int,
    *,
    sample: Callable[[random.Random], F],
    say: Callable[[random.Random, F], S],
    label: Callable[[F, S], dict[str, Any]],
    prompt: Callable[[S], str] | None = None,
    ignore_case: bool = False,
) -> list[dict]:
    """``n`` rows from ``random.Random(seed)``, in paraphrase families of 2-3 rows.

    ``sample(rng)`` draws a family and ``say(rng, family)`` one phrasing of it; ``prompt(phrasing)`` is the
    row's prompt (the phrasing itself when ``prompt`` is None). A family takes up to 8 tries per row it
    wants, and keeps a phrasing whose prompt no earlier row has and that differs from the family's other
    prompts (ignoring case when ``ignore_case``); a family that ends up with fewer than two rows, or that
    would leave exactly one row to fill, is dropped. ``label(family, phrasing)`` gives each kept row's
    other fields (``completion``, ...) and raises ``RuntimeError`` when the labeller disagrees with the
    generator. Rows are ``{"id": "<name>-00001", "group": "fam-0001", "prompt": ..., **label(...)}``;
    no prompt occurs twice.
    """
    if n < 2:
        raise ValueError("n must be at least 2 (every family has at least two rows)")
    text: Callable[[S], str] = prompt or _itself
    fold: Callable[[str], str] = str.lower if ignore_case else _itself
    rng = random.Random(seed)
    rows: list[dict] = []
    seen: set[str] = set()  # membership tests only; never iterated, so hash order cannot leak in
    families = 0
    while len(rows) < n:
        left = n - len(rows)
        family = sample(rng)
        want = left if left <= 3 else rng.randint(2, 3)
        phrasings: list[tuple[S, str]] = []
        for _ in range(want * 8):
            if len(phrasings) == want:
                break
            said = say(rng, family)
            p = text(said)
            if p not in seen and fold(p) not in {fold(q) for _, q in phrasings}:
                phrasings.append((said, p))
        # Never leave exactly one row to fill: a family needs at least two.
        if left - len(phrasings) == 1 and len(phrasings) > 2:
            phrasings.pop()
        if len(phrasings) < 2 or left - len(phrasings) == 1:
            continue
        families += 1
        for said, p in phrasings:
            fields = label(family, said)
            seen.add(p)
            rows.append(
                {"id": f"{name}-{len(rows) + 1:05d}", "group": f"fam-{families:04d}", "prompt": p, **fields}
            )
    return rows


def command_line(
    generate: Callable[[int, int], list[dict]], default_out: Path, description: str
) -> Callable[..., int]:
    """The generator script's ``main(argv=None)``, returning the exit status: ``generator_main`` with
    ``generate``'s own defaults for ``--n`` and ``--seed``, and ``default_out`` for ``--out``."""
    defaults = inspect.signature(generate).parameters

    def main(argv: list[str] | None = None) -> int:
        return generator_main(
            argv,
            description=description,
            generate=generate,
            default_n=defaults["n"].default,
            default_out=default_out,
            default_seed=defaults["seed"].default,
        )

    return main
