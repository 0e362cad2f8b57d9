"""KFP components of the evaluate stage: one for a trained Model artifact, one for a base model locator
(two components instead of an optional artifact input, which kfp.local rejects: kubeflow/pipelines#13061).
Both call the same core.evaluate, so candidate and base are scored identically."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def evaluate_op(
    model: Input[Model],
    eval_data: Input[Dataset],
    system_prompt: str,
    output_schema: str,
    max_new_tokens: int,
    batch_size: int,
    max_examples: int,
    config_hash: str,
    metrics: Output[Metrics],
    predictions: Output[Dataset],
):
    """Evaluate a trained model on the eval split: batched greedy generation, task metrics.

    Args:
        model: the trained Model artifact (full weights or adapter).
        eval_data: canonical held-out rows.
        system_prompt: system message rendered before every prompt (same as in training).
        output_schema: the task's JSON Schema, as JSON text.
        max_new_tokens: generation budget per example, in tokens.
        batch_size: prompts generated together.
        max_examples: evaluate at most this many rows; -1 = all.
        config_hash: sha256 of the validated config, recorded as provenance.
        metrics: json_validity, schema_validity, exact_match, field_match and per-field matches.
        predictions: one row per example with the answer and its scores.
    """
    import json

    from components.evaluate.core import evaluate, record

    result = evaluate(
        model.path,
        eval_data.path,
        system_prompt,
        json.loads(output_schema),
        predictions.path,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        max_examples=max_examples,
    )
    upstream = {"model": model.metadata.get("sha256", ""), "eval_data": eval_data.metadata.get("sha256", "")}
    record(result, metrics, predictions, model_label="candidate", config_hash=config_hash, upstream=upstream)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def evaluate_base_op(
    base_model: str,
    eval_data: Input[Dataset],
    system_prompt: str,
    output_schema: str,
    max_new_tokens: int,
    batch_size: int,
    max_examples: int,
    config_hash: str,
    metrics: Output[Metrics],
    predictions: Output[Dataset],
):
    """Evaluate the untrained base model exactly as the candidate is evaluated: the baseline.

    Args:
        base_model: tiny://<example>, a hub id, a local folder or a gs:// folder.
        eval_data: canonical held-out rows.
        system_prompt: system message rendered before every prompt.
        output_schema: the task's JSON Schema, as JSON text.
        max_new_tokens: generation budget per example, in tokens.
        batch_size: prompts generated together.
        max_examples: evaluate at most this many rows; -1 = all.
        config_hash: sha256 of the validated config, recorded as provenance.
        metrics: the same metrics as the candidate's.
        predictions: one row per example with the answer and its scores.
    """
    import json

    from components.evaluate.core import evaluate, record

    result = evaluate(
        base_model,
        eval_data.path,
        system_prompt,
        json.loads(output_schema),
        predictions.path,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        max_examples=max_examples,
    )
    upstream = {"base_model": base_model, "eval_data": eval_data.metadata.get("sha256", "")}
    record(
        result,
        metrics,
        predictions,
        model_label=f"base:{base_model}",
        config_hash=config_hash,
        upstream=upstream,
    )
