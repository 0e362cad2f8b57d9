"""What does constrained decoding cost per generated token, and what does batching buy, in evaluation?

Model: the config's ``tiny://travel`` (built into a temp SLMFORGE_HOME), briefly fine-tuned first (full,
the config's recipe but ``--train-steps`` steps, default 1500, ~80 s here, on the rows not used as prompts;
not timed), so that free decoding also writes JSON and stops as a trained model does; ``--train-steps 0``
keeps it random-init: then free decoding rarely stops while constrained rows stop when their JSON closes,
so free and constrained runs differ in length and batch utilisation, not only in the grammar's cost.
Prompts: ``--n`` travel prompts spread evenly over examples/travel/data/travel.jsonl, rendered as the
evaluator renders them (``prompt_token_ids`` with the config's system prompt). Decoding: the evaluator's
own ``components.evaluate.core.generate`` (greedy, left-padded batches, longest prompts first), free or
with ``components.evaluate.constrained.logits_processor_factory(json_schema=<travel schema>)``; the
grammar is compiled once, outside the timings (its compile time is printed).

Tokens are counted honestly from what ``model.generate`` returned (it is wrapped to look at its output):
per row, the generated tokens before the first EOS that are not padding (EOS itself not counted). Time is
the wall time of ``generate(...)`` over all prompts; ms/token = time / those tokens. ``row-steps`` are the
token slots the model computed (decode steps x rows per batch): a batch runs until its last row stops, so
rows that stop early still cost steps; tokens / row-steps is the batch's utilisation. The constrained
processor's own time (accepting tokens, filling the bitmask, masking logits) is measured by a wrapper, the
model's forward time by forward hooks; the rest is ``generate``'s own loop.

Variants, each warmed up once (a short untimed call), then ``--repeats`` rounds (medians reported, and
the range of the per-round ratios). Within a round the variants are interleaved call by call (prompt by
prompt, batch by batch, order rotated), since a shared machine's load comes and goes within seconds:

  * ``free b1`` / ``free bB``: free decoding one prompt at a time / in batches of ``--batch-size``;
  * ``free b1, length-matched``: free decoding one at a time, each prompt's budget set to the number of
    steps constrained decoding took for it, so both run the same forward passes: the clean per-token
    overhead of the grammar (a random model decoding freely rarely stops, a constrained one stops when the
    JSON closes, so unmatched runs also differ in per-call fixed costs such as the prefill);
  * ``constrained b1`` / ``constrained bB``.

Goals: constrained / free time per token <= 1.10x; batch / one-at-a-time throughput >= 3x. Measures;
asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/eval_decoding.py [--n 64] [--batch-size 32] [--max-new-tokens 128]
        [--repeats 3] [--train-steps 1500] [--config examples/travel/config.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file: make `components` importable without an install
    sys.path.insert(0, str(REPO))

from runinfo import code_version, load_average, machine, package_version  # noqa: E402  (benchmarks/runinfo.py, next to this file)


class Recorder:
    """Wraps ``model.generate``: counts, per call, the real generated tokens, decode steps and row-steps,
    and (``per_row``) each row's step count, in the order of the rows of the batch."""

    def __init__(self, model, eos: int, pad: int) -> None:
        self.generate, self.eos, self.pad = model.generate, eos, pad
        model.generate = self
        self.reset()

    def reset(self) -> None:
        self.tokens = self.steps = self.row_steps = 0
        self.per_row: list[list[int]] = []  # tokens per row of each batch, EOS included if emitted

    def __call__(self, *args, **kwargs):
        import torch

        out = self.generate(*args, **kwargs)
        new = out[:, kwargs["input_ids"].shape[1] :]
        is_eos = new == self.eos
        ended = is_eos.any(dim=1)
        stop = torch.where(ended, is_eos.int().argmax(dim=1), new.shape[1])  # index of the first EOS
        before = torch.arange(new.shape[1]).unsqueeze(0) < stop.unsqueeze(1)
        self.tokens += int((before & (new != self.pad)).sum())
        self.steps += new.shape[1]
        self.row_steps += new.numel()
        self.per_row.append((stop + ended.int()).tolist())
        return out


class ForwardTimer:
    """Wall time inside the model's forward (pre- to post-hook), summed in ``seconds``."""

    def __init__(self, model) -> None:
        self.seconds, self._start = 0.0, 0.0
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)

    def _pre(self, module, args) -> None:
        self._start = time.perf_counter()

    def _post(self, module, args, output) -> None:
        self.seconds += time.perf_counter() - self._start


class TimedFactory:
    """The constrained factory, each processor wrapped in a timer (seconds summed in ``seconds``)."""

    def __init__(self, factory) -> None:
        self.factory, self.seconds = factory, 0.0

    def __call__(self, batch_size: int) -> list:
        return [_Timed(p, self) for p in self.factory(batch_size)]


class _Timed:
    """Times one processor. Carries a fixed ``__signature__`` like the processor it wraps (transformers
    inspects the signature of every logits processor on every step)."""

    def __init__(self, processor, owner: TimedFactory) -> None:
        self.processor, self.owner = processor, owner

    def __call__(self, input_ids, scores):
        start = time.perf_counter()
        try:
            return self.processor(input_ids, scores)
        finally:
            self.owner.seconds += time.perf_counter() - start


_Timed.__call__.__signature__ = inspect.signature(_Timed.__call__)


def run_round(ctx: dict, args, round_: int) -> dict[str, dict]:
    """Every variant over all prompts once, interleaved call by call: for each batch of prompts (one prompt
    for the b1 variants, ``--batch-size`` for the others) each variant runs in turn, the order rotated from
    batch to batch, so load from other processes falls on all of them alike. The prompts are sorted
    longest first, as ``generate`` sorts them, so its batches are the ones it would make of all of them."""
    from components.evaluate.core import generate

    model, tok, prompts, rec, timed = ctx["model"], ctx["tok"], ctx["prompts"], ctx["rec"], ctx["timed"]
    variants, batch_size = ctx["variants"], args.batch_size
    out = {
        v: dict(
            seconds=0.0,
            tokens=0,
            steps=0,
            row_steps=0,
            forward_s=0.0,
            processor_s=0.0,
            batch=_batch(v, batch_size),
        )
        for v in variants
    }
    for size in (1, batch_size):
        names = [v for v in variants if out[v]["batch"] == size]
        for k, start in enumerate(range(0, len(prompts), size)):
            chunk = prompts[start : start + size]
            shift = (k + round_) % len(names)
            for name in names[shift:] + names[:shift]:
                budget = ctx["matched"][start] if "matched" in name else args.max_new_tokens
                factory = timed if name.startswith("constrained") else None
                rec.reset()
                timed.seconds = ctx["forward"].seconds = 0.0
                t0 = time.perf_counter()
                generate(model, tok, chunk, budget, size, logits_processor_factory=factory)
                r = out[name]
                r["seconds"] += time.perf_counter() - t0
                r["tokens"] += rec.tokens
                r["steps"] += rec.steps
                r["row_steps"] += rec.row_steps
                r["processor_s"] += timed.seconds
                r["forward_s"] += ctx["forward"].seconds
    return out


def fine_tune(cfg, rows: list[dict], steps: int, tmp: Path) -> tuple[str, str]:
    """Full fine-tuning of the config's base on ``rows`` with its recipe for ``steps`` steps; returns the
    Model folder and a line saying what was trained."""
    from components.common.tables import write_rows
    from components.train.core import TrainOptions, train
    from pipelines.parameters import stage_options

    table = tmp / "train.parquet"
    write_rows([{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in rows], table)
    opts = stage_options(TrainOptions, "train", cfg, method="full", max_steps=steps)
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer's printed loss logs
        result = train(table, cfg.model.base, cfg.task.system_prompt, opts, tmp / "model")
    return str(tmp / "model"), (
        f"fine-tuned {result.steps} steps x batch {opts.batch_size} on {len(rows):,} rows in "
        f"{result.runtime_s:.0f} s, final loss {result.final_loss:.4f}"
    )


def _batch(variant: str, batch_size: int) -> int:
    return 1 if variant.split(",")[0].endswith(" b1") else batch_size


def report(args, ctx: dict, results: dict[str, list[dict]], load: tuple[str, str]) -> None:
    when = time.strftime("%Y-%m-%d")
    threads = os.environ.get("OMP_NUM_THREADS", "")
    code = code_version("components/evaluate", "benchmarks/eval_decoding.py")
    command = (
        f"OMP_NUM_THREADS={threads} python benchmarks/eval_decoding.py --n {args.n} "
        f"--batch-size {args.batch_size} --max-new-tokens {args.max_new_tokens} --repeats {args.repeats} "
        f"--train-steps {args.train_steps}"
    )
    med = {v: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for v, runs in results.items()}
    for m in med.values():
        m["ms_tok"] = 1e3 * m["seconds"] / max(m["tokens"], 1)
        m["tok_s"] = m["tokens"] / m["seconds"] if m["seconds"] else 0.0
        m["us_slot"] = 1e6 * m["seconds"] / max(m["row_steps"], 1)

    print()
    print(f"machine: {machine()}, OMP_NUM_THREADS={threads}, python {platform.python_version()}, {when}")
    print(
        f"code: {code}; torch {package_version('torch')}, transformers {package_version('transformers')}, "
        f"xgrammar {package_version('xgrammar')}"
    )
    print(f"load average (1/5/15 min) at start: {load[0]}; at end: {load[1]}")
    print(
        f"model: {ctx['base']} ({ctx['trained'] or 'random init, untrained'}), {ctx['params']:,} parameters; "
        f"{args.n} prompts; "
        f"max_new_tokens {args.max_new_tokens}; grammar compiled once in {ctx['compile_s'] * 1e3:.1f} ms"
    )
    print()
    print(f"`{command}`: {machine()}, OMP_NUM_THREADS={threads}, {when}, code {code}; load average {load[0]}")
    print()
    print(
        "| decoding | batch | generated tokens | row-steps (util.) | s, median (min–max) | ms / token | "
        "µs / row-step | tokens/s | model forward s | processor s (share) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for variant, runs in results.items():
        m = med[variant]
        secs = [r["seconds"] for r in runs]
        share = f"{m['processor_s']:.2f} ({m['processor_s'] / m['seconds']:.0%})" if m["processor_s"] else "–"
        print(
            f"| {variant.split(' b')[0]}{' (length-matched)' if 'matched' in variant else ''} | "
            f"{int(m['batch'])} | {int(m['tokens']):,} | {int(m['row_steps']):,} "
            f"({m['tokens'] / max(m['row_steps'], 1):.0%}) | {m['seconds']:.2f} ({min(secs):.2f}–{max(secs):.2f}) "
            f"| {m['ms_tok']:.3f} | {m['us_slot']:.0f} | {m['tok_s']:,.0f} | {m['forward_s']:.2f} | {share} |"
        )
    print()
    b = args.batch_size

    def per_round(r: dict, key: str) -> float:
        return {
            "ms_tok": r["seconds"] / max(r["tokens"], 1),
            "tok_s": r["tokens"] / r["seconds"],
            "us_slot": r["seconds"] / max(r["row_steps"], 1),
        }[key]

    def ratio(a: str, c: str, key: str) -> str:
        """Ratio of the medians, and the range of the per-round ratios (the variants were interleaved)."""
        if a not in med or c not in med or not med[c][key]:
            return "–"
        rounds = [per_round(x, key) / per_round(y, key) for x, y in zip(results[a], results[c], strict=True)]
        return f"{med[a][key] / med[c][key]:.2f}x (rounds {min(rounds):.2f}–{max(rounds):.2f})"

    print(
        "constrained / free, time per generated token: "
        f"one at a time, length-matched {ratio('constrained b1', 'free b1, length-matched', 'ms_tok')}; "
        f"one at a time, as decoded {ratio('constrained b1', 'free b1', 'ms_tok')}; "
        f"batch {b} {ratio(f'constrained b{b}', f'free b{b}', 'ms_tok')} (goal <= 1.10x); "
        f"per row-step (the cost of one token slot, whoever uses it) at batch {b}: "
        f"{ratio(f'constrained b{b}', f'free b{b}', 'us_slot')}"
    )
    print(
        f"batch {b} / one at a time, generated tokens/s: free {ratio(f'free b{b}', 'free b1', 'tok_s')}, "
        f"constrained {ratio(f'constrained b{b}', 'constrained b1', 'tok_s')} (goal >= 3x)"
    )
    print("per round (s):")
    for variant, runs in results.items():
        print(f"  {variant:<24} " + "  ".join(f"{r['seconds']:.2f}" for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "examples" / "travel" / "config.yaml"))
    parser.add_argument("--n", type=int, default=64, help="eval prompts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant")
    parser.add_argument(
        "--train-steps", type=int, default=1500, help="fine-tune first for this many steps (0 = random init)"
    )
    args = parser.parse_args()

    import torch
    import transformers

    from components.common.config_load import load_config
    from components.common.models import load_for_inference
    from components.common.task import prompt_token_ids
    from components.evaluate.constrained import logits_processor_factory
    from components.evaluate.core import generate

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    cfg = load_config(args.config)
    schema = cfg.task.output_schema  # the config's task.schema file, loaded by load_config
    with open(cfg.data.train, encoding="utf-8") as f:  # a local JSONL for the demo configs
        rows = [json.loads(line) for line in f if line.strip()]
    picked = set(range(0, len(rows), max(len(rows) // args.n, 1))[: args.n])
    train_rows = [r for i, r in enumerate(rows) if i not in picked]
    rows = [rows[i] for i in sorted(picked)]
    load_start = load_average()

    with tempfile.TemporaryDirectory(prefix="slmforge-eval-decoding-") as tmp:
        os.environ["SLMFORGE_HOME"] = str(Path(tmp) / "home")
        source, trained = cfg.model.base, ""
        if args.train_steps > 0:
            source, trained = fine_tune(cfg, train_rows, args.train_steps, Path(tmp))
            print(trained, flush=True)
        model, tok = load_for_inference(source)
        prompts = [prompt_token_ids(tok, cfg.task.system_prompt, r["prompt"]) for r in rows]
        prompts.sort(key=len, reverse=True)  # generate()'s own order: see run_round
        start = time.perf_counter()
        factory = logits_processor_factory(tok, json_schema=schema)
        compile_s = time.perf_counter() - start
        rec = Recorder(model, tok.eos_token_id, tok.pad_token_id)
        timed = TimedFactory(factory)
        forward = ForwardTimer(model)
        ctx = dict(
            model=model,
            tok=tok,
            prompts=prompts,
            rec=rec,
            timed=timed,
            forward=forward,
            base=cfg.model.base,
            trained=trained,
            params=sum(p.numel() for p in model.parameters()),
            compile_s=compile_s,
        )

        # Steps constrained decoding takes per prompt, one at a time: the length-matched free budgets.
        matched = []
        for p in prompts:
            generate(model, tok, [p], args.max_new_tokens, 1, logits_processor_factory=factory)
            matched.append(rec.per_row[-1][0])
        ctx["matched"] = matched

        b = args.batch_size
        variants = ["free b1", "free b1, length-matched", "constrained b1", f"free b{b}", f"constrained b{b}"]
        ctx["variants"] = variants
        for variant in variants:  # warm-up: one short untimed call of each kind
            batch = _batch(variant, b)
            constrained = variant.startswith("constrained")
            generate(
                model,
                tok,
                prompts[:batch],
                8,
                batch,
                logits_processor_factory=factory if constrained else None,
            )
        results: dict[str, list[dict]] = {v: [] for v in variants}
        for round_ in range(args.repeats):
            for variant, r in run_round(ctx, args, round_).items():
                results[variant].append(r)
                print(
                    f"round {round_ + 1} {variant:<24} {r['seconds']:6.2f} s  {r['tokens']:6,} tokens  "
                    f"{1e3 * r['seconds'] / max(r['tokens'], 1):.3f} ms/token",
                    flush=True,
                )
    report(args, ctx, results, (load_start, load_average()))


if __name__ == "__main__":
    main()
