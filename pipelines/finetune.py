"""The main DAG: ingest -> clean -> split -> augment (off by default) -> preflight -> train -> evaluate (candidate and
base) -> gate -> export -> register -> deploy (off by default).

Only wiring lives here: which output feeds which input, resources, retries, caching and the gate
condition. The pipeline's parameters (explicit and typed, so the Vertex console compares runs parameter by
parameter) and the step inputs they feed come from the config's declarations (pipelines/parameters.py):
a step takes ``step_inputs("<step>", p)`` plus the outputs of the steps before it.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics

from components import (
    augment_op,
    clean_op,
    deploy_op,
    evaluate_base_op,
    evaluate_champion_op,
    evaluate_op,
    export_op,
    gate_op,
    ingest_op,
    preflight_op,
    register_op,
    retrieval_baseline_op,
    split_op,
    train_custom_job_op,
    train_op,
)
from pipelines.parameters import GPU_POOL_TAINT, declare, step_inputs


class FinetuneOutputs(NamedTuple):
    candidate_metrics: Metrics
    base_metrics: Metrics
    gate_passed: bool
    gate_reasons: str


OUTPUTS_HELP = {
    "candidate_metrics": "the fine-tuned model's evaluation.",
    "base_metrics": "the untrained base model's evaluation, same data and decoding.",
    "gate_passed": "whether the candidate passed the gate (and was registered).",
    "gate_reasons": "every gate rule's verdict in words.",
}

RETRIES = {"num_retries": 2, "backoff_duration": "60s", "backoff_factor": 2.0}  # transient infra failures

# Steps that run a model (train, evaluate) on Vertex: the accelerators come from pipeline parameters; the CPU
# and memory limits are a g2-standard-8's (1 L4, 8 vCPU, 32 GB), what the train step has always asked for.
GPU_STEP_CPU = "8"
GPU_STEP_MEMORY = "32G"

# The helpers below take ``p``, the pipeline's parameters by name: the finetune and evaluate pipelines wire
# these steps once, here.


def on_gpu(task, p: dict):
    """Run ``task`` on the pipeline's accelerators, within the GPU-step CPU and memory limits. Vertex: the
    accelerator type and count from the parameters. The kfp target (its parameters carry
    ``gpu_node_selector``): a ``nvidia.com/gpu`` limit of that count, the GPU pool's node selector and a
    toleration of its taint, in the Kubernetes platform spec (kfp-kubernetes). CPU steps carry none of
    these, so the pool's taint keeps them off it."""
    kfp_target = "gpu_node_selector" in p
    task.set_accelerator_type("nvidia.com/gpu" if kfp_target else p["accelerator_type"])
    task.set_accelerator_limit(p["accelerator_count"]).set_cpu_limit(GPU_STEP_CPU).set_memory_limit(
        GPU_STEP_MEMORY
    )
    if kfp_target:
        from kfp import kubernetes

        kubernetes.add_node_selector_json(task, p["gpu_node_selector"])
        kubernetes.add_toleration(task, **GPU_POOL_TAINT)
    return task


def prepare_data(p: dict):
    """ingest -> clean -> split, as every pipeline prepares data: an evaluate run holds out the same rows
    as the training run of the same config. Returns the split task."""
    ingest = ingest_op(**step_inputs("ingest", p)).set_retry(**RETRIES)
    clean = clean_op(
        dataset=ingest.outputs["dataset"],
        upstream_events=ingest.outputs["events"],
        **step_inputs("clean", p),
    ).set_retry(**RETRIES)
    return split_op(
        dataset=clean.outputs["cleaned"],
        upstream_events=clean.outputs["events"],
        **step_inputs("split", p),
    ).set_retry(**RETRIES)


def evaluation_args(p: dict, split) -> tuple[dict, dict]:
    """The arguments every evaluation shares (the gate checks that candidate and baselines were scored on
    the same eval rows, template, task scorer and decoding): (task_args, eval_args = task_args + decoding)."""
    task_args = {"eval_data": split.outputs["eval_data"], **step_inputs("task", p)}
    return task_args, {**task_args, **step_inputs("decode", p)}


def baselines_and_gate(p: dict, split, candidate, task_args: dict, eval_args: dict):
    """Score the base model, the registry's champion and the retrieval baseline like ``candidate`` (an
    evaluate task), and gate the candidate against them. Returns (base, gate) tasks."""
    base = on_gpu(evaluate_base_op(**step_inputs("evaluate_base", p), **eval_args), p)
    base.set_display_name("evaluate-base")
    champion = on_gpu(evaluate_champion_op(**step_inputs("evaluate_champion", p), **eval_args), p)
    champion.set_display_name("evaluate-champion")
    champion.set_caching_options(False)  # the champion alias moves between runs
    for task in (base, champion):
        task.set_retry(**RETRIES)
    retrieval = (
        retrieval_baseline_op(train_data=split.outputs["train_data"], **task_args)
        .set_display_name("evaluate-retrieval")
        .set_retry(**RETRIES)
    )
    gate = gate_op(
        candidate=candidate.outputs["metrics"],
        candidate_predictions=candidate.outputs["predictions"],
        candidate_classification=candidate.outputs["classification"],
        base=base.outputs["metrics"],
        base_predictions=base.outputs["predictions"],
        champion=champion.outputs["metrics"],
        champion_predictions=champion.outputs["predictions"],
        retrieval=retrieval.outputs["metrics"],
        retrieval_predictions=retrieval.outputs["predictions"],
        **step_inputs("gate", p),
    )
    # Decided anew every run (not cached). Retried like the other CPU steps: a failing verdict is a return
    # value, not an error; the gate raises only on inputs it cannot compare (GateError), a seconds-long
    # step whose retries delay that error by the backoff (minutes) in exchange for surviving a lost machine.
    gate.set_caching_options(False).set_retry(**RETRIES)
    return base, gate


def train_and_register(p: dict, multi_node: bool) -> FinetuneOutputs:
    """The finetune pipeline's body: prepare data, plan, train, evaluate, gate, export and register."""
    split = prepare_data(p)
    # teacher paraphrases of the training rows only (data.augment; off: the rows pass through unchanged)
    augment = augment_op(
        train_data=split.outputs["train_data"],
        eval_data=split.outputs["eval_data"],
        split_card=split.outputs["card"],
        upstream_events=split.outputs["events"],
        **step_inputs("augment", p),
    ).set_retry(**RETRIES)  # a retry asks nothing already answered: replies are cached
    train_rows = augment.outputs["augmented"]
    # no retries: its verdicts are deterministic
    preflight = preflight_op(train_data=train_rows, **step_inputs("preflight", p))
    train_args = {
        "train_data": train_rows,
        "validation_data": split.outputs["validation_data"],
        "grad_accum": preflight.outputs["grad_accum"],
        "gradient_checkpointing": preflight.outputs["gradient_checkpointing"],
        **step_inputs("train", p),
    }
    if multi_node:  # a Vertex AI custom job with worker pools: train_nodes machines
        train = train_custom_job_op(**train_args, **step_inputs("train_job", p))
        train.set_display_name("train-multi-node")
    else:
        train = on_gpu(train_op(**train_args), p).set_display_name("train")
    # preemption (spot GPUs): the step saves a checkpoint on SIGTERM and exits 143; a retry resumes
    train.set_retry(num_retries=3, backoff_duration="60s", backoff_factor=1.0)
    trained = train.outputs["model"]
    task_args, eval_args = evaluation_args(p, split)
    candidate = on_gpu(evaluate_op(model=trained, **eval_args), p).set_display_name("evaluate-candidate")
    base, gate = baselines_and_gate(p, split, candidate.set_retry(**RETRIES), task_args, eval_args)
    with dsl.If(gate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (KFP condition syntax)
        export = on_gpu(
            export_op(
                model=trained,
                train_data=train_rows,
                split_card=augment.outputs["card"],
                candidate_metrics=candidate.outputs["metrics"],
                candidate_predictions=candidate.outputs["predictions"],
                gate_report=gate.outputs["report"],
                **step_inputs("export", p),
                **eval_args,
            ),
            p,
        )
        export.set_display_name("export").set_retry(**RETRIES)
        register = (
            register_op(
                model=export.outputs["exported"],
                metrics=export.outputs["metrics"],
                train_data=train_rows,
                gate_passed=gate.outputs["Output"],
                gate_reasons=gate.outputs["reasons"],
                pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                **step_inputs("register", p),
            )
            .set_retry(**RETRIES)
            .set_caching_options(False)
        )
        # deploy.after_register: a canary on a Vertex AI endpoint with a smoke check; not retried (a retry
        # would deploy a second canary) nor cached (it acts on the endpoint as it is now)
        with dsl.If(p["deploy_after_register"] == True, name="deploy"):  # noqa: E712 (KFP condition syntax)
            deploy_op(
                registered=register.outputs["registered"],
                predictions=export.outputs["predictions"],
                **step_inputs("deploy", p),
            ).set_caching_options(False).set_display_name("deploy")
    return FinetuneOutputs(
        candidate.outputs["metrics"],
        base.outputs["metrics"],
        gate.outputs["Output"],
        gate.outputs["reasons"],
    )


def build_finetune(multi_node: bool, target: str = "vertex"):
    """The finetune pipeline compiled for ``target``; ``multi_node``: its train step is a Vertex AI custom
    job with ``train_nodes`` machines (components/train/custom_job.py) instead of one pipeline task. Two
    compiled templates rather than a dsl.If/dsl.OneOf inside one: kfp.local cannot return an artifact out
    of a OneOf branch."""
    name = "finetune-multinode" if multi_node else "finetune"
    func = declare(
        lambda p: train_and_register(p, multi_node),
        pipeline=name,
        summary="Fine-tune a small language model on a task dataset, evaluate it against its base, gate, "
        "register.",
        returns=OUTPUTS_HELP,
        return_type=FinetuneOutputs,
        target=target,
    )
    return dsl.pipeline(
        name=f"slmforge-{name}",
        description="Fine-tune, evaluate, gate and register a small language model"
        + (" (train: a multi-node Vertex AI custom job)." if multi_node else "."),
    )(func)


finetune = build_finetune(multi_node=False)
finetune_multinode = build_finetune(multi_node=True)
