"""evaluate: batched greedy generation on the eval split, scored by the task's metrics.

The same function scores the fine-tuned candidate and the untrained base (or any baseline): same
prompts (components/common/task.py), same decoding, same scorer. Predictions are written per example
so a person can see what each model answered.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.common.models import load_for_inference
from components.common.provenance import sha256_path
from components.common.scoring import Scored, TaskSpec, score
from components.common.tables import read_rows
from components.common.task import prompt_token_ids

DECODINGS = ("free", "constrained", "both")


@dataclass
class EvalResult:
    metrics: dict[str, float]  # the primary decoding's metrics; with "both" also free/<m> and constrained/<m>
    examples: int
    generation_s: float
    settings: dict[str, Any] = field(default_factory=dict)  # what must match between candidate and baselines
    scored: Scored | None = None  # the primary decoding's per-example scores and confusion matrix


def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    logits_processor_factory=None,
    cache_implementation: str | None = None,
) -> tuple[list[str], list[bool]]:
    """Greedy decoding of token-id prompts in left-padded batches; returns the decoded completions and,
    per row, whether it was cut off: ``max_new_tokens`` ran out before the model (or the constraint)
    ended the answer with eos. A cut-off constrained answer is an unfinished document, not valid JSON.

    ``logits_processor_factory``: called once per batch with the batch size, returns a list of
    transformers LogitsProcessors for that batch (constrained decoding); None = free decoding.
    ``cache_implementation``: transformers' KV cache (None = its default, dynamic; "static" preallocates
    it, which lets transformers compile the decoding step on a GPU)."""
    import torch

    pad = tokenizer.pad_token_id
    # Greedy, the same for every batch; given as overrides, so the model's own generation_config still
    # supplies everything else (as generate(**kwargs) does).
    settings = {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": pad}
    settings |= {"eos_token_id": tokenizer.eos_token_id, "cache_implementation": cache_implementation}
    # Longest prompts first keeps padding low within a batch; results are put back in input order.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: dict[int, str] = {}
    cut: dict[int, bool] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        with torch.inference_mode():
            processors = logits_processor_factory(len(idx)) if logits_processor_factory else None
            out = model.generate(input_ids=ids, attention_mask=mask, logits_processor=processors, **settings)
        new = out[:, width:]
        ended = (new == tokenizer.eos_token_id).any(dim=1).tolist()
        for row, i in enumerate(idx):
            texts[i] = tokenizer.decode(new[row], skip_special_tokens=True)
            cut[i] = not ended[row] and new.shape[1] >= max_new_tokens
    return [texts[i] for i in range(len(prompts))], [cut[i] for i in range(len(prompts))]


CPU_BATCH = 64  # eval.batch_size 0 on CPU


def plan_batch_size(model, prompts: list[list[int]], max_new_tokens: int, configured: int) -> int:
    """``configured`` when > 0. 0 = planned: on CPU ``CPU_BATCH``; on a GPU the largest batch (at most every
    prompt) whose KV cache (2 x layers x KV heads x head size per token, prompt + answer) and fp32 logits
    (twice: scores and the processed copy) fit in half of the GPU's free memory."""
    import torch

    if configured > 0:
        return configured
    if model.device.type != "cuda":
        return CPU_BATCH
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    width = max(len(p) for p in prompts) + max_new_tokens
    per_row = (
        2 * cfg.num_hidden_layers * kv_heads * head * model.dtype.itemsize * width + 2 * 4 * cfg.vocab_size
    )
    free, _ = torch.cuda.mem_get_info(model.device)
    return max(1, min(len(prompts), int(free * 0.5 // per_row)))


def task_settings(task: TaskSpec, eval_path) -> dict[str, Any]:
    """The part of a fair comparison every baseline shares: the same eval rows, the same task scorer."""
    return {
        "eval_sha256": sha256_path(eval_path),
        "task_sha256": hashlib.sha256(json.dumps(asdict(task), sort_keys=True).encode()).hexdigest(),
    }


def eval_settings(tokenizer, system_prompt: str, task: TaskSpec, eval_path, **decoding) -> dict[str, Any]:
    """What a fair comparison of generated answers holds fixed: eval rows, task, prompt template, decoding."""
    template = json.dumps([system_prompt, tokenizer.chat_template or ""], sort_keys=True)
    return {
        **task_settings(task, eval_path),
        "template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        **decoding,
    }


def evaluate(
    model_source: str,
    eval_path: str | Path,
    system_prompt: str,
    task: TaskSpec,
    predictions_path: str | Path,
    *,
    max_new_tokens: int = 128,
    batch_size: int = 0,  # 0 = planned (plan_batch_size)
    max_examples: int = -1,  # -1 = every row
    decoding: str = "free",  # free | constrained | both (constrained is primary, free beside it)
) -> EvalResult:
    """Generate for every eval row with ``model_source`` (a Model folder or a base locator) and score it."""
    import torch

    if decoding not in DECODINGS:
        raise ValueError(f"eval.decoding={decoding!r}: use one of {', '.join(DECODINGS)}")
    if decoding != "free" and not task.constraint():
        raise ValueError(f"eval.decoding={decoding!r}: a {task.type} task has no output constraint; use free")
    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = read_rows(eval_path)
    if max_examples >= 0:
        rows = rows[:max_examples]
    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    model, tokenizer = load_for_inference(model_source, dtype=torch.bfloat16 if gpu_bf16 else None)
    if torch.cuda.is_available() and not getattr(model, "is_quantized", False):
        model.to("cuda")  # a bitsandbytes model is placed on the GPU when loaded and cannot be moved
    prompts = [prompt_token_ids(tokenizer, system_prompt, r["prompt"], r["history"]) for r in rows]
    targets = [r["completion"] for r in rows]
    batch_size = plan_batch_size(model, prompts, max_new_tokens, batch_size) if prompts else 1
    runs: dict[str, tuple[list[str], Scored]] = {}
    start = time.perf_counter()
    for mode in ("free", "constrained") if decoding == "both" else (decoding,):
        factory = None
        if mode == "constrained":
            from components.evaluate.constrained import logits_processor_factory

            factory = logits_processor_factory(tokenizer, **task.constraint())
        predicted, cut = generate(model, tokenizer, prompts, max_new_tokens, batch_size, factory)
        scored = score(task, predicted, targets)
        # counted, not hidden: a cut-off answer scores as what it is (unfinished), and the share is reported
        scored.metrics["cut_off"] = sum(cut) / len(cut) if cut else 0.0
        scored.per_example["cut_off"] = [float(c) for c in cut]
        for detail, c in zip(scored.details, cut, strict=True):
            if c:
                why = f"cut off at max_new_tokens={max_new_tokens} (no end of answer)"
                detail["error"] = f"{why}; {detail['error']}" if detail["error"] else why
        runs[mode] = (predicted, scored)
    elapsed = time.perf_counter() - start
    primary = "constrained" if decoding == "both" else decoding
    predicted, scored = runs[primary]
    metrics = dict(scored.metrics)
    if decoding == "both":
        for mode, (_, other) in runs.items():
            metrics.update({f"{mode}/{k}": v for k, v in other.metrics.items() if k != "examples"})
    extra = {"predicted_free": runs["free"][0]} if decoding == "both" else {}
    write_predictions(rows, predicted, scored, predictions_path, **extra)
    settings = eval_settings(
        tokenizer,
        system_prompt,
        task,
        eval_path,
        decoding=decoding,
        max_new_tokens=max_new_tokens,
        examples=len(rows),
    )
    return EvalResult(metrics, len(rows), elapsed, settings, scored)


def write_predictions(rows, predicted: list[str], scored: Scored, path: str | Path, **extra_columns) -> None:
    """One row per example: what was asked, expected, answered, and how it scored."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "id": [r["id"] for r in rows],
        "history": [r["history"] for r in rows],
        "prompt": [r["prompt"] for r in rows],
        "expected": [r["completion"] for r in rows],
        "predicted": predicted,
        **extra_columns,
        **{f"score/{k}": v for k, v in scored.per_example.items()},
        "error": [d["error"] for d in scored.details],
        "fields_differing": [json.dumps(d["fields_differing"]) for d in scored.details],
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), str(path))


def read_per_example(predictions_path: str | Path) -> dict[str, list[float]]:
    """The per-example scores (metric -> values in eval-row order) a predictions table holds."""
    import pyarrow.parquet as pq

    table = pq.read_table(str(predictions_path))
    return {
        c.removeprefix("score/"): table[c].to_pylist() for c in table.column_names if c.startswith("score/")
    }


def record(
    result: EvalResult,
    metrics,
    predictions,
    *,
    model_label: str,
    config_hash: str,
    upstream: dict,
    classification=None,
) -> None:
    """Write an evaluation onto its KFP outputs (any objects with ``log_metric``/``metadata``/``path``):
    task metrics on the Metrics artifact (only metrics, so the Vertex console compares them cleanly),
    counts, settings and provenance on the predictions Dataset, and for a classification task the
    confusion matrix on ``classification`` (a KFP ClassificationMetrics artifact)."""
    from components.common.provenance import stamp

    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    if classification is not None and result.scored is not None and result.scored.confusion is not None:
        categories, matrix = result.scored.confusion
        classification.log_confusion_matrix(categories, matrix)
    predictions.metadata.update(
        {
            "model": model_label,
            "examples": result.examples,
            "generation_s": round(result.generation_s, 3),
            "settings": result.settings,
        }
    )
    stamp(predictions.metadata, predictions.path, config_hash=config_hash, upstream=upstream)


def evaluate_to_outputs(
    source: str,
    eval_data,
    system_prompt: str,
    task_parts: tuple[str, str, str],
    decoding: str,
    max_new_tokens: int,
    batch_size: int,
    max_examples: int,
    config_hash: str,
    metrics,
    predictions,
    classification,
    *,
    label: str,
    upstream: dict,
) -> EvalResult:
    """``evaluate`` a model source and ``record`` the result on a component's outputs."""
    result = evaluate(
        source,
        eval_data.path,
        system_prompt,
        TaskSpec.from_parts(*task_parts),
        predictions.path,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        max_examples=max_examples,
        decoding=decoding,
    )
    upstream = {**upstream, "eval_data": eval_data.metadata.get("sha256", "")}
    record(
        result,
        metrics,
        predictions,
        model_label=label,
        config_hash=config_hash,
        upstream=upstream,
        classification=classification,
    )
    return result


@contextmanager
def champion(model_name: str, registry: str, metrics, predictions) -> Iterator[tuple[str, Path] | None]:
    """The registry's ``champion`` of ``model_name``, downloaded for the block: yields (its URI, the local
    folder) and logs ``available = 1`` after the block; without one, logs ``available = 0``, writes empty
    predictions, says so and yields None."""
    import tempfile

    from components.register.core import download_alias, registry_from_spec

    with tempfile.TemporaryDirectory() as tmp:
        found = download_alias(registry_from_spec(registry), model_name, "champion", tmp)
        if found is None:
            print(
                f"no champion of {model_name!r} in the registry yet: rules against it are skipped", flush=True
            )
            metrics.log_metric("available", 0.0)
            Path(predictions.path).parent.mkdir(parents=True, exist_ok=True)
            Path(predictions.path).write_bytes(b"")
            predictions.metadata.update({"model": "champion", "available": False, "settings": {}})
            yield None
            return
        uri, local = found
        yield uri, Path(local)
    metrics.log_metric("available", 1.0)
