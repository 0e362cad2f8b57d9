"""How fast does evaluation generate on a GPU, free and constrained, and what do batch and KV cache buy?

Model: a random-init Qwen2.5-shaped 0.5B built on the GPU (benchmarks/gpu_models.py), bf16, loaded the way
evaluation loads a model (``components.common.models.load_for_inference``). Prompts: ``--n`` travel prompts
rendered as the evaluator renders them. Decoding: the evaluator's own ``components.evaluate.core.generate``
(greedy, left-padded batches), free, or constrained to the travel schema with the evaluator's xgrammar
processor (grammar compiled once, untimed; its mask is applied on the GPU). Variants: batch ``--batch-sizes``
x KV cache (dynamic, transformers' default; static, which lets transformers compile the decoding step).
Each variant runs once untimed (compilation, caches), then once timed.

Tokens are counted from what ``model.generate`` returned (benchmarks/eval_decoding.py ``Recorder``): per row,
the tokens before the first EOS that are not padding. A random model decoding freely rarely stops, so free
rows run to ``--max-new-tokens``; constrained rows stop when their JSON closes. Goals (issue 16): >= 10,000
generated tokens/s on the 0.5B shape; constrained <= 1.10x free per token. Measures; asserts nothing.

    python benchmarks/gpu_eval.py [--shape 0.5b] [--n 512] [--batch-sizes 64,256] [--max-new-tokens 64]
        [--caches dynamic,static] [--out FILE.json]
    python benchmarks/gpu_eval.py --shape tiny --n 32 --batch-sizes 16 --caches dynamic   # on CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

from eval_decoding import Recorder
from gpu_models import REPO, SYSTEM, build_model, gpu_name, scratch, stack, write_results
from runinfo import code_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="0.5b")
    parser.add_argument("--n", type=int, default=512, help="prompts")
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--caches", default="dynamic,static")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from components.common.models import load_for_inference
    from components.common.task import prompt_token_ids
    from components.evaluate.constrained import logits_processor_factory
    from components.evaluate.core import generate

    root = scratch()
    folder = build_model(args.shape, root / "model")
    model, tokenizer = load_for_inference(str(folder))
    lines = (REPO / "examples/travel/data/travel.jsonl").read_text(encoding="utf-8").splitlines()
    step = max(1, len(lines) // args.n)
    prompts = [prompt_token_ids(tokenizer, SYSTEM, json.loads(x)["prompt"]) for x in lines[::step][: args.n]]
    schema = json.loads((REPO / "examples/travel/schema.json").read_text(encoding="utf-8"))
    start = time.perf_counter()
    constrained = logits_processor_factory(tokenizer, json_schema=schema)
    compile_s = time.perf_counter() - start
    recorder = Recorder(model, tokenizer.eos_token_id, tokenizer.pad_token_id)
    cuda = torch.cuda.is_available()
    print(f"device: {gpu_name()}; {stack()}; python {platform.python_version()}")
    print(f"code: {code_version('components', 'benchmarks')}; {time.strftime('%Y-%m-%d')}")
    print(
        f"{args.shape}, {len(prompts)} prompts, max_new_tokens {args.max_new_tokens}; grammar {compile_s:.2f} s"
    )
    results = []
    for cache in args.caches.split(","):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            for decoding, factory in (("free", None), ("constrained", constrained)):
                r = {"cache": cache, "batch": batch, "decoding": decoding}
                kw = dict(
                    logits_processor_factory=factory,
                    cache_implementation=None if cache == "dynamic" else cache,
                )
                try:
                    generate(model, tokenizer, prompts[:batch], args.max_new_tokens, batch, **kw)  # warm-up
                    recorder.reset()
                    if cuda:
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    generate(model, tokenizer, prompts, args.max_new_tokens, batch, **kw)
                    if cuda:
                        torch.cuda.synchronize()
                    r.update(
                        seconds=time.perf_counter() - t, tokens=recorder.tokens, row_steps=recorder.row_steps
                    )
                    r["tokens_per_s"] = r["tokens"] / r["seconds"]
                    r["ms_per_token"] = 1000 * r["seconds"] / max(r["tokens"], 1)
                except Exception as e:  # reported; the other variants still run
                    r["error"] = f"{type(e).__name__}: {e}"[:400]
                results.append(r)
                _print(r)
    for cache in args.caches.split(","):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            by = {r["decoding"]: r for r in results if (r["cache"], r["batch"]) == (cache, batch)}
            if all("ms_per_token" in by.get(d, {}) for d in ("free", "constrained")):
                ratio = by["constrained"]["ms_per_token"] / by["free"]["ms_per_token"]
                print(f"cache {cache}, batch {batch}: constrained / free per token = {ratio:.2f}x")
    write_results(args.out, results)
    shutil.rmtree(root, ignore_errors=True)
    return 0


def _print(r: dict) -> None:
    head = f"{r['cache']:<8} batch {r['batch']:>4} {r['decoding']:<12}"
    if "error" in r:
        print(f"{head} FAILED {r['error']}", flush=True)
        return
    print(
        f"{head} {r['tokens_per_s']:>10,.0f} generated tok/s  {r['ms_per_token']:.3f} ms/token  "
        f"{r['tokens']:,} tokens in {r['seconds']:.2f} s (utilisation {r['tokens'] / max(r['row_steps'], 1):.0%})",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
