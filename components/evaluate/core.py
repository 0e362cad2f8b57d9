"""evaluate: batched greedy generation on the eval split, scored by the task's metrics.

The same function scores the fine-tuned candidate and the untrained base (or any baseline): same
prompts (components/common/task.py), same decoding, same scorer. Predictions are written per example
so a person can see what each model answered.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from components.common.models import load_for_inference
from components.common.tables import read_rows
from components.common.task import aggregate, prompt_token_ids, schema_validator, score_structured


@dataclass
class EvalResult:
    metrics: dict[str, float]
    examples: int
    generation_s: float


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy decoding of token-id prompts in left-padded batches; returns the decoded completions."""
    import torch

    pad = tokenizer.pad_token_id
    # Longest prompts first keeps padding low within a batch; results are put back in input order.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: dict[int, str] = {}
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
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
        for row, i in enumerate(idx):
            texts[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True)
    return [texts[i] for i in range(len(prompts))]


def evaluate(
    model_source: str,
    eval_path: str | Path,
    system_prompt: str,
    output_schema: dict,
    predictions_path: str | Path,
    *,
    max_new_tokens: int = 128,
    batch_size: int = 64,
    max_examples: int = -1,  # -1 = every row
) -> EvalResult:
    """Generate for every eval row with ``model_source`` (a Model folder or a base locator) and score it."""
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = read_rows(eval_path)
    if max_examples >= 0:
        rows = rows[:max_examples]
    model, tokenizer = load_for_inference(model_source)
    if torch.cuda.is_available():
        model.to("cuda")
    prompts = [prompt_token_ids(tokenizer, system_prompt, r["prompt"], r["history"]) for r in rows]
    start = time.perf_counter()
    predictions = generate(model, tokenizer, prompts, max_new_tokens, batch_size)
    elapsed = time.perf_counter() - start

    validator = schema_validator(output_schema)
    scores = [score_structured(p, r["completion"], validator) for p, r in zip(predictions, rows, strict=True)]
    write_predictions(rows, predictions, scores, predictions_path)
    return EvalResult(metrics=aggregate(scores), examples=len(rows), generation_s=elapsed)


def write_predictions(rows, predictions, scores, path: str | Path) -> None:
    """One row per example: what was asked, expected, answered, and how it scored."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        [
            {
                "id": r["id"],
                "history": r["history"],
                "prompt": r["prompt"],
                "expected": r["completion"],
                "predicted": p,
                "json_valid": s.json_valid,
                "schema_valid": s.schema_valid,
                "exact_match": s.exact,
                "error": s.error or "",
                "fields": json.dumps(s.fields, sort_keys=True),
            }
            for r, p, s in zip(rows, predictions, scores, strict=True)
        ]
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path))


def record(
    result: EvalResult, metrics, predictions, *, model_label: str, config_hash: str, upstream: dict
) -> None:
    """Write an evaluation onto its KFP outputs (any objects with ``log_metric``/``metadata``/``path``):
    task metrics on the Metrics artifact (only metrics, so the Vertex console compares them cleanly),
    counts and provenance on the predictions Dataset."""
    from components.common.provenance import stamp

    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    predictions.metadata.update(
        {"model": model_label, "examples": result.examples, "generation_s": round(result.generation_s, 3)}
    )
    stamp(predictions.metadata, predictions.path, config_hash=config_hash, upstream=upstream)
