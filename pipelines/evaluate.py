"""The evaluate-only DAG: ingest -> clean -> split -> fetch the model -> evaluate it and the baselines -> gate.

No training: it scores a model that exists already (a registry version, a gs:// folder, a local folder)
exactly as the finetune pipeline scores its candidate: the same data preparation (so the held-out rows
are those the training run of the same config held out), the same evaluation arguments, baselines and
gate rules — the steps come from the helpers in pipelines/finetune.py. Nothing is registered; the gate's
verdict and report say whether the model would pass. ``submit CONFIG --pipeline evaluate --model URI``
runs it on Vertex (parameters: the config's, narrowed to these, plus ``model_uri``).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics

from components import evaluate_op, fetch_model_op
from pipelines.finetune import RETRIES, baselines_and_gate, evaluation_args, on_gpu, prepare_data
from pipelines.parameters import declare, parameters_of, step_inputs


class EvaluateOutputs(NamedTuple):
    candidate_metrics: Metrics
    base_metrics: Metrics
    gate_passed: bool
    gate_reasons: str


def evaluate_model(p: dict) -> EvaluateOutputs:
    """The evaluate pipeline's body: prepare data, fetch the model, score it and the baselines, gate."""
    split = prepare_data(p)
    fetch = (
        fetch_model_op(**step_inputs("fetch_model", p))
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


def build_evaluate(target: str = "vertex"):
    """The evaluate pipeline compiled for ``target`` (vertex or kfp)."""
    return dsl.pipeline(
        name="slmforge-evaluate",
        description="Evaluate an existing model against the base model, the champion and retrieval, and gate it.",
    )(
        declare(
            evaluate_model,
            pipeline="evaluate",
            summary="Evaluate an existing model on the config's held-out rows against the baselines, and gate it.",
            returns={
                "candidate_metrics": "the evaluated model's metrics.",
                "base_metrics": "the base model's metrics, same rows and decoding.",
                "gate_passed": "whether the model passes the config's gate rules.",
                "gate_reasons": "every gate rule's verdict in words.",
            },
            return_type=EvaluateOutputs,
            target=target,
        )
    )


evaluate = build_evaluate()


def evaluate_parameters(params: dict, model_uri: str) -> dict:
    """The evaluate pipeline's arguments: ``params`` (a config's ``pipeline_parameters``) narrowed to the
    parameters it declares, plus the model to evaluate."""
    declared = {p.name for p in parameters_of("evaluate")}
    return {**{k: v for k, v in params.items() if k in declared}, "model_uri": model_uri}
