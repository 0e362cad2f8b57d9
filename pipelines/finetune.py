"""The main DAG: ingest -> clean -> split -> preflight -> train -> evaluate (candidate and base) -> gate -> register.

Only wiring lives here: which output feeds which input, resources, retries, caching and the gate
condition. Every parameter is explicit so the Vertex console compares runs parameter by parameter;
``components.common.config.pipeline_parameters`` produces exactly these names from a config file.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics

from components import (
    clean_op,
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


class FinetuneOutputs(NamedTuple):
    candidate_metrics: Metrics
    base_metrics: Metrics
    gate_passed: bool
    gate_reasons: str


RETRIES = {"num_retries": 2, "backoff_duration": "60s", "backoff_factor": 2.0}  # transient infra failures

# Steps that run a model (train, evaluate) on Vertex: the accelerators come from pipeline parameters; the CPU
# and memory limits are a g2-standard-8's (1 L4, 8 vCPU, 32 GB), what the train step has always asked for.
GPU_STEP_CPU = "8"
GPU_STEP_MEMORY = "32G"

# The helpers below take ``p``, the pipeline's parameters by name (``dict(locals())`` at the top of its
# body): the finetune and evaluate pipelines wire these steps once, here, with the same parameter names.


def on_gpu(task, p: dict):
    """Run ``task`` on the pipeline's accelerators, within the GPU-step CPU and memory limits."""
    return (
        task.set_accelerator_type(p["accelerator_type"])
        .set_accelerator_limit(p["accelerator_count"])
        .set_cpu_limit(GPU_STEP_CPU)
        .set_memory_limit(GPU_STEP_MEMORY)
    )


def prepare_data(p: dict):
    """ingest -> clean -> split, as every pipeline prepares data: an evaluate run holds out the same rows
    as the training run of the same config. Returns the split task."""
    ingest = ingest_op(
        train_locator=p["train_data"],
        eval_locator=p["eval_data"],
        shape=p["data_shape"],
        prompt_field=p["prompt_field"],
        completion_field=p["completion_field"],
        group_field=p["group_field"],
        id_field=p["id_field"],
        output_schema=p["output_schema"],
        labels=p["labels"],
        label_normalize=p["label_normalize"],
        chat_fixes=p["chat_fixes"],
        max_row_bytes=p["max_row_bytes"],
        max_reject_rate=p["max_reject_rate"],
        config_hash=p["config_hash"],
    ).set_retry(**RETRIES)
    clean = clean_op(
        dataset=ingest.outputs["dataset"],
        upstream_events=ingest.outputs["events"],
        pii=p["pii"],
        pii_types=p["pii_types"],
        near_dup_threshold=p["near_dup_threshold"],
        max_tokens=p["max_tokens"],
        base_model=p["base_model"],
        system_prompt=p["system_prompt"],
        max_reject_rate=p["max_reject_rate"],
        config_hash=p["config_hash"],
    ).set_retry(**RETRIES)
    return split_op(
        dataset=clean.outputs["cleaned"],
        upstream_events=clean.outputs["events"],
        eval_fraction=p["eval_fraction"],
        seed=p["split_seed"],
        cover=p["split_cover"],
        output_schema=p["output_schema"],
        config_hash=p["config_hash"],
    ).set_retry(**RETRIES)


def evaluation_args(p: dict, split) -> tuple[dict, dict]:
    """The arguments every evaluation shares (the gate checks that candidate and baselines were scored on
    the same eval rows, template, task scorer and decoding): (task_args, eval_args = task_args + decoding)."""
    task_args = dict(
        eval_data=split.outputs["eval_data"],
        system_prompt=p["system_prompt"],
        task_type=p["task_type"],
        output_schema=p["output_schema"],
        labels=p["labels"],
        max_examples=p["eval_max_examples"],
        config_hash=p["config_hash"],
    )
    eval_args = dict(
        **task_args,
        decoding=p["eval_decoding"],
        max_new_tokens=p["eval_max_new_tokens"],
        batch_size=p["eval_batch_size"],
    )
    return task_args, eval_args


def baselines_and_gate(p: dict, split, candidate, task_args: dict, eval_args: dict):
    """Score the base model, the registry's champion and the retrieval baseline like ``candidate`` (an
    evaluate task), and gate the candidate against them. Returns (base, gate) tasks."""
    base = on_gpu(evaluate_base_op(base_model=p["base_model"], **eval_args), p).set_display_name(
        "evaluate-base"
    )
    champion = on_gpu(
        evaluate_champion_op(model_name=p["model_name"], registry=p["registry"], **eval_args), p
    ).set_display_name("evaluate-champion")
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
        task_type=p["task_type"],
        rules=p["gate_rules"],
        bootstrap=p["gate_bootstrap"],
        title=p["config_name"],
    )
    # Decided anew every run (not cached). Retried like the other CPU steps: a failing verdict is a return
    # value, not an error; the gate raises only on inputs it cannot compare (GateError), a seconds-long
    # step whose retries delay that error by the backoff (minutes) in exchange for surviving a lost machine.
    gate.set_caching_options(False).set_retry(**RETRIES)
    return base, gate


def build_finetune(multi_node: bool):
    """The finetune pipeline; ``multi_node``: its train step is a Vertex AI custom job with ``train_nodes``
    machines (components/train/custom_job.py) instead of one pipeline task. Two compiled templates rather
    than a dsl.If/dsl.OneOf inside one: kfp.local cannot return an artifact out of a OneOf branch."""

    @dsl.pipeline(
        name=f"slmforge-finetune{'-multinode' if multi_node else ''}",
        description="Fine-tune, evaluate, gate and register a small language model"
        + (" (train: a multi-node Vertex AI custom job)." if multi_node else "."),
    )
    def finetune(
        config_name: str,
        config_hash: str,
        train_data: str,
        output_schema: str,
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
        method: str = "lora",
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        lora_target_modules: str = "all-linear",
        lora_modules_to_save: str = "",
        max_steps: int = 500,
        batch_size: int = 32,
        learning_rate: float = 2e-4,
        lr_scheduler: str = "cosine",
        warmup_ratio: float = 0.03,
        weight_decay: float = 0.0,
        max_length: int = 256,
        train_seed: int = 42,
        group_by_length: bool = False,
        packing: bool = False,
        train_backend: str = "auto",
        checkpoint_steps: int = 100,
        train_nodes: int = 1,
        train_processes_per_node: int = 0,
        experiment: str = "",
        preflight_strict: bool = True,
        preflight_truncation_threshold: float = 0.05,
        eval_decoding: str = "free",
        eval_max_new_tokens: int = 128,
        eval_batch_size: int = 64,
        eval_max_examples: int = -1,
        gate_rules: str = "[]",
        gate_bootstrap: str = '{"confidence": 0.95, "resamples": 2000, "seed": 0}',
        tracking_uri: str = "",
        registry: str = '{"backend": "mlflow", "tracking_uri": ""}',
        model_name: str = "",
        export_tolerance: float = 0.01,
        export_quantize: str = "",
        export_quantized_tolerance: float = 0.05,
        trust_remote_code: str = "{}",
        accelerator_type: str = "NVIDIA_L4",
        accelerator_count: int = 1,
        machine_type: str = "",
        resume_from: str = "",
    ) -> FinetuneOutputs:
        """Fine-tune a small language model on a task dataset, evaluate it against its base, gate, register.

        Args:
            config_name: project name from the config (used for display).
            config_hash: sha256 of the validated config; every artifact records it.
            train_data: locator of the task data: PATH, jsonl:/json:/csv:/parquet:PATH (local or gs://), hf:NAME:SPLIT.
            output_schema: the task's JSON Schema, as JSON text.
            task_type: structured, classification or generation (components/common/scoring.py).
            labels: the label set of a classification task, as a JSON list.
            label_normalize: comma-separated strip, lower: how ingest matches a target to a label.
            chat_fixes: comma-separated drop_leading_assistant, drop_trailing_user: conversation repairs.
            system_prompt: system message rendered before every prompt, in training and evaluation.
            eval_data: locator of an explicit eval set; empty = hold out eval_fraction of train_data.
            data_shape: auto, prompt_completion, alpaca, messages or sharegpt.
            max_reject_rate: fail when ingest and clean reject more than this share of rows.
            max_row_bytes: source rows larger than this are rejected.
            pii: redact, block or off.
            pii_types: comma-separated PII types to detect.
            near_dup_threshold: Jaccard similarity from which rows are near-duplicates; -1 = exact only.
            max_tokens: rows whose rendered example has more tokens are rejected; -1 = no limit.
            split_cover: JSON list of fields whose every value must be in train; null = the schema's enums.
            prompt_field: source field with the prompt text.
            completion_field: source field with the target text.
            group_field: source field with a group id; empty = none.
            id_field: source field with a stable row id; empty = the line number.
            eval_fraction: share of rows held out (whole groups).
            split_seed: seed of the split.
            base_model: tiny://<example>, hub id, local folder or gs:// folder.
            method: full or lora.
            lora_r: LoRA rank.
            lora_alpha: LoRA alpha.
            lora_dropout: LoRA dropout.
            lora_target_modules: comma-separated module names, or all-linear.
            lora_modules_to_save: comma-separated modules trained in full beside the adapter.
            max_steps: optimizer steps.
            batch_size: examples per step per device.
            learning_rate: peak learning rate.
            lr_scheduler: transformers scheduler name.
            warmup_ratio: share of steps spent warming up.
            weight_decay: AdamW decoupled weight decay (0 = none).
            max_length: tokens per training example.
            train_seed: seed of init, dropout and data order.
            group_by_length: batch rows of similar length (less padding; on small data it learned slower).
            packing: pack rows into full sequences, padding-free.
            train_backend: auto, hf or unsloth.
            checkpoint_steps: resumable checkpoint every N steps (and on SIGTERM); a retry resumes from it.
            train_nodes: machines training together: 1 in the finetune template (train is one pipeline
                task); the finetune-multinode template runs train as a Vertex AI custom job with this many
                replicas. The train step stops when the value does not match the template.
            train_processes_per_node: data-parallel training processes per machine; 0 = one per GPU.
            experiment: MLflow / Vertex experiment of the training runs.
            preflight_strict: fail before training when a preflight check finds an error.
            preflight_truncation_threshold: largest share of training rows allowed longer than max_length.
            eval_decoding: free, constrained (held to the schema or label set) or both, side by side.
            eval_max_new_tokens: generation budget per example.
            eval_batch_size: prompts generated together.
            eval_max_examples: evaluate at most this many rows; -1 = all.
            gate_rules: JSON list of gate rules.
            gate_bootstrap: paired bootstrap of the not_worse_than rules, JSON {resamples, seed, confidence}.
            tracking_uri: MLflow tracking URI of the training runs; empty = embedded sqlite store.
            registry: JSON {backend: mlflow|vertex, ...}: where the champion is read and candidates registered.
            model_name: registered model name.
            export_tolerance: largest drop of a gated metric allowed between adapter and exported model.
            export_quantize: comma-separated quantized variants exported beside the merged model (nf4, int8).
            export_quantized_tolerance: largest drop of a gated metric allowed for a quantized variant.
            trust_remote_code: JSON {model id: pinned commit} of bases allowed to run their own code.
            accelerator_type: accelerator of the train and evaluate steps on Vertex (ignored locally).
            accelerator_count: accelerators per train and evaluate step (ignored locally).
            machine_type: Vertex machine type of the train step; empty = the one carrying the accelerators.
            resume_from: checkpoints folder of an earlier run of the same config and data to continue the
                training from (`slmforge run --resume RUN` sets it); empty = from step 0.

        Returns:
            candidate_metrics: the fine-tuned model's evaluation.
            base_metrics: the untrained base model's evaluation, same data and decoding.
            gate_passed: whether the candidate passed the gate (and was registered).
            gate_reasons: every gate rule's verdict in words.
        """
        p = dict(locals())  # the parameters by name, for the steps both pipelines share (below)
        split = prepare_data(p)
        preflight = preflight_op(
            train_data=split.outputs["train_data"],
            base_model=base_model,
            system_prompt=system_prompt,
            method=method,
            max_length=max_length,
            batch_size=batch_size,
            max_steps=max_steps,
            accelerator_type=accelerator_type,
            accelerator_count=accelerator_count,
            machine_type=machine_type,
            lora_r=lora_r,
            lora_target_modules=lora_target_modules,
            strict=preflight_strict,
            truncation_threshold=preflight_truncation_threshold,
            max_new_tokens=eval_max_new_tokens,
            config_hash=config_hash,
        )  # no retries: its verdicts are deterministic
        train_args = dict(
            train_data=split.outputs["train_data"],
            base_model=base_model,
            system_prompt=system_prompt,
            method=method,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            lr_scheduler=lr_scheduler,
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
            max_length=max_length,
            seed=train_seed,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_target_modules=lora_target_modules,
            lora_modules_to_save=lora_modules_to_save,
            group_by_length=group_by_length,
            packing=packing,
            backend=train_backend,
            grad_accum=preflight.outputs["grad_accum"],
            checkpoint_steps=checkpoint_steps,
            nodes=train_nodes,
            processes_per_node=train_processes_per_node,
            experiment=experiment,
            tracking_uri=tracking_uri,
            config_hash=config_hash,
            resume_from=resume_from,
        )
        # preemption (spot GPUs): the step saves a checkpoint on SIGTERM and exits 143; a retry resumes
        train_retries = dict(num_retries=3, backoff_duration="60s", backoff_factor=1.0)
        if multi_node:  # a Vertex AI custom job with worker pools: train_nodes machines
            train = train_custom_job_op(
                **train_args,
                replica_count=train_nodes,
                machine_type=machine_type,
                accelerator_type=accelerator_type,
                accelerator_count=accelerator_count,
            ).set_display_name("train-multi-node")
        else:
            train = on_gpu(train_op(**train_args), p).set_display_name("train")
        train.set_retry(**train_retries)
        trained = train.outputs["model"]
        task_args, eval_args = evaluation_args(p, split)
        candidate = on_gpu(evaluate_op(model=trained, **eval_args), p).set_display_name("evaluate-candidate")
        base, gate = baselines_and_gate(p, split, candidate.set_retry(**RETRIES), task_args, eval_args)
        with dsl.If(gate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (KFP condition syntax)
            export = (
                on_gpu(
                    export_op(
                        model=trained,
                        train_data=split.outputs["train_data"],
                        split_card=split.outputs["card"],
                        candidate_metrics=candidate.outputs["metrics"],
                        candidate_predictions=candidate.outputs["predictions"],
                        gate_report=gate.outputs["report"],
                        gate_rules=gate_rules,
                        tolerance=export_tolerance,
                        quantize=export_quantize,
                        quantized_tolerance=export_quantized_tolerance,
                        trust_remote_code=trust_remote_code,
                        model_name=model_name,
                        parity_accelerator_type=accelerator_type,
                        parity_accelerator_count=accelerator_count,
                        **eval_args,
                    ),
                    p,
                )
                .set_display_name("export")
                .set_retry(**RETRIES)
            )
            register_op(
                model=export.outputs["exported"],
                metrics=export.outputs["metrics"],
                train_data=split.outputs["train_data"],
                model_name=model_name,
                registry=registry,
                config_hash=config_hash,
                gate_passed=gate.outputs["Output"],
                gate_reasons=gate.outputs["reasons"],
                pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            ).set_retry(**RETRIES).set_caching_options(False)
        return FinetuneOutputs(
            candidate.outputs["metrics"],
            base.outputs["metrics"],
            gate.outputs["Output"],
            gate.outputs["reasons"],
        )

    return finetune


finetune = build_finetune(multi_node=False)
finetune_multinode = build_finetune(multi_node=True)
