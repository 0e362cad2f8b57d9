"""KFP component of the export stage (logic in core.py)."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import TRAINER_IMAGE, component


@component(TRAINER_IMAGE)
def export_op(
    model: Input[Model],
    eval_data: Input[Dataset],
    train_data: Input[Dataset],
    split_card: Input[Artifact],
    candidate_metrics: Input[Metrics],
    candidate_predictions: Input[Dataset],
    gate_report: Input[Markdown],
    system_prompt: str,
    task_type: str,
    output_schema: str,
    labels: str,
    decoding: str,
    max_new_tokens: int,
    batch_size: int,
    max_examples: int,
    gate_rules: str,
    tolerance: float,
    quantize: str,
    quantized_tolerance: float,
    trust_remote_code: str,
    model_name: str,
    parity_accelerator_type: str,
    parity_accelerator_count: int,
    config_hash: str,
    exported: Output[Model],
    metrics: Output[Metrics],
    predictions: Output[Dataset],
    card: Output[Markdown],
):
    """Merge the gated candidate into safetensors weights, evaluate the merged model like the candidate, and
    fail when a gated metric drops beyond the tolerance; write the model card and lineage beside the weights.

    Args:
        model: the trained Model artifact (LoRA adapter or full weights) that passed the gate.
        eval_data: canonical held-out rows, the same the candidate was scored on.
        train_data: the training rows (lineage).
        split_card: the split's dataset card folder (manifest.json: counts and hashes).
        candidate_metrics: the candidate's evaluation, the reference of the parity check.
        candidate_predictions: the candidate's answers; their settings must match the exported evaluation's.
        gate_report: the gate's Markdown report (verdicts, metrics vs baselines with CIs), quoted in the card.
        system_prompt: system message rendered before every prompt.
        task_type: structured, classification or generation.
        output_schema: the JSON Schema of a structured task, as JSON text.
        labels: the label set of a classification task, as a JSON list.
        decoding: free, constrained or both, as for the candidate.
        max_new_tokens: generation budget per example.
        batch_size: prompts generated together.
        max_examples: evaluate at most this many rows; -1 = all.
        gate_rules: JSON list of gate rules; their metrics are the ones parity is checked on.
        tolerance: largest allowed drop of a gated metric, exported vs adapter.
        quantize: comma-separated quantized variants to write and evaluate (nf4, int8); empty = none.
        quantized_tolerance: largest allowed drop of a gated metric, quantized variant vs adapter.
        trust_remote_code: JSON {model id: pinned commit} of bases allowed to run their own code.
        model_name: registered model name (the card's title).
        parity_accelerator_type: accelerator the step runs on (Vertex), recorded with the parity evaluation.
            Also an input so the gate-passed branch receives the parameter its resource setting names (the
            KFP compiler passes a condition branch only the parameters its tasks take as inputs; an input
            named accelerator_type would collide with the compiler's own resource placeholder input).
        parity_accelerator_count: accelerators of the step, recorded likewise.
        config_hash: sha256 of the validated config.
        exported: safetensors weights, tokenizer, generation config, MODEL_CARD.md, lineage.json, and
            quantized/<kind>/ per variant.
        metrics: the exported model's metrics.
        predictions: the exported model's answers and per-example scores.
        card: the model card.
    """
    import json

    from components.export.core import export_to_outputs

    export_to_outputs(
        model,
        eval_data,
        train_data,
        split_card,
        candidate_metrics,
        candidate_predictions,
        gate_report,
        task_parts=(task_type, output_schema, labels),
        system_prompt=system_prompt,
        eval_options={
            "decoding": decoding,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "max_examples": max_examples,
        },
        rules=json.loads(gate_rules),
        tolerance=tolerance,
        quantize=[q for q in quantize.split(",") if q],
        quantized_tolerance=quantized_tolerance,
        trust_remote_code=json.loads(trust_remote_code),
        model_name=model_name,
        hardware=f"{parity_accelerator_count} x {parity_accelerator_type}",
        config_hash=config_hash,
        exported=exported,
        metrics=metrics,
        predictions=predictions,
        card=card,
    )
