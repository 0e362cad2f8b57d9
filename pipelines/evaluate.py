"""The evaluate-only DAG: ingest -> clean -> split -> fetch the model -> evaluate it and the baselines -> gate.

No training: it scores a model that exists already (a registry version, a gs:// folder, a local folder)
exactly as the finetune pipeline scores its candidate: the same data preparation (so the held-out rows
are those the training run of the same config held out), the same evaluation arguments, baselines and
gate rules — the steps come from the helpers in pipelines/finetune.py. Nothing is registered; the gate's
verdict and report say whether the model would pass. ``submit CONFIG --pipeline evaluate --model URI``
runs it on Vertex (parameters: the config's, narrowed to these, plus ``model_uri``).
"""

import inspect
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics

from components import evaluate_op, fetch_model_op
from pipelines.finetune import (
    RETRIES,
    baselines_and_gate,
    evaluation_args,
    finetune,
    on_gpu,
    prepare_data,
)


class EvaluateOutputs(NamedTuple):
    candidate_metrics: Metrics
    base_metrics: Metrics
    gate_passed: bool
    gate_reasons: str


def evaluate(
    config_name: str,
    config_hash: str,
    train_data: str,
    output_schema: str,
    model_uri: str,
    task_type: str = "structured",
    labels: str = "[]",
    label_normalize: str = "",
    chat_fixes: str = "",
    system_prompt: str = "",
    eval_data: str = "",
    data_shape: str = "auto",
    max_reject_rate: float = 0.01,
    max_row_bytes: int = 1_000_000,
    pii: str = "redact",
    pii_types: str = "EMAIL,PHONE,CREDIT_CARD,IBAN,IP_ADDRESS",
    near_dup_threshold: float = 0.9,
    max_tokens: int = 256,
    split_cover: str = "null",
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    group_field: str = "group",
    id_field: str = "id",
    eval_fraction: float = 0.1,
    split_seed: int = 13,
    base_model: str = "tiny://travel",
    eval_decoding: str = "free",
    eval_max_new_tokens: int = 128,
    eval_batch_size: int = 64,
    eval_max_examples: int = -1,
    gate_rules: str = "[]",
    gate_bootstrap: str = '{"confidence": 0.95, "resamples": 2000, "seed": 0}',
    registry: str = '{"backend": "mlflow", "tracking_uri": ""}',
    model_name: str = "",
    accelerator_type: str = "NVIDIA_L4",
    accelerator_count: int = 1,
) -> EvaluateOutputs:
    p = dict(locals())  # the parameters by name, for the steps shared with the finetune pipeline
    split = prepare_data(p)
    fetch = (
        fetch_model_op(model_uri=model_uri, registry=registry, config_hash=config_hash)
        .set_display_name("fetch-model")
        .set_retry(**RETRIES)
        .set_caching_options(False)  # models:/NAME@ALIAS moves between runs
    )
    task_args, eval_args = evaluation_args(p, split)
    candidate = on_gpu(evaluate_op(model=fetch.outputs["model"], **eval_args), p)
    candidate.set_display_name("evaluate-candidate").set_retry(**RETRIES)
    base, gate = baselines_and_gate(p, split, candidate, task_args, eval_args)
    return EvaluateOutputs(
        candidate.outputs["metrics"], base.outputs["metrics"], gate.outputs["Output"], gate.outputs["reasons"]
    )


def _docstring(names: list[str]) -> str:
    """The pipeline's docstring (KFP copies its Args into the compiled YAML as input descriptions): the
    finetune pipeline's words for every parameter the two share, so they cannot drift apart."""
    import docstring_parser  # kfp's own docstring parser (a kfp dependency)

    shared = {
        p.arg_name: " ".join(p.description.split())
        for p in docstring_parser.parse(finetune.pipeline_func.__doc__).params
    }
    own = {
        "model_uri": "the model to evaluate: models:/NAME/VERSION or models:/NAME@ALIAS (a version of "
        "the registry), a gs:// folder, or a local folder.",
        "model_name": "registered model name (its champion is a baseline).",
    }
    args = "\n".join(f"    {name}: {own.get(name) or shared[name]}" for name in names)
    return (
        "Evaluate an existing model on the config's held-out rows against the baselines, and gate it.\n\n"
        f"Args:\n{args}\n\nReturns:\n"
        "    candidate_metrics: the evaluated model's metrics.\n"
        "    base_metrics: the base model's metrics, same rows and decoding.\n"
        "    gate_passed: whether the model passes the config's gate rules.\n"
        "    gate_reasons: every gate rule's verdict in words.\n"
    )


evaluate.__doc__ = _docstring(list(inspect.signature(evaluate).parameters))
evaluate = dsl.pipeline(
    name="slmforge-evaluate",
    description="Evaluate an existing model against the base model, the champion and retrieval, and gate it.",
)(evaluate)


def evaluate_parameters(params: dict, model_uri: str) -> dict:
    """The evaluate pipeline's arguments: ``params`` (a config's ``pipeline_parameters``) narrowed to the
    parameters it declares, plus the model to evaluate."""
    declared = inspect.signature(evaluate.pipeline_func).parameters
    return {**{k: v for k, v in params.items() if k in declared}, "model_uri": model_uri}
