"""KFP component of the train stage (logic in core.py)."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.images import TRAINER_IMAGE, component
from components.train.custom_job import as_custom_job


@component(TRAINER_IMAGE)
def train_op(
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    base_model: str,
    system_prompt: str,
    method: str,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    lr_scheduler: str,
    warmup_ratio: float,
    weight_decay: float,
    max_length: int,
    seed: int,
    lora_r: int,
    lora_alpha: int,
    lora_dropout: float,
    lora_target_modules: str,
    lora_modules_to_save: str,
    group_by_length: bool,
    packing: bool,
    backend: str,
    grad_accum: int,
    gradient_checkpointing: bool,
    attn_implementation: str,
    kernels: str,
    checkpoint_steps: int,
    eval_steps: int,
    select: str,
    select_metric: str,
    early_stopping_patience: int,
    task_eval_rows: int,
    task_type: str,
    output_schema: str,
    labels: str,
    max_new_tokens: int,
    decoding: str,
    nodes: int,
    processes_per_node: int,
    experiment: str,
    tracking_uri: str,
    config_hash: str,
    resume_from: str,
    model: Output[Model],
    metrics: Output[Metrics],
    loss_curve: Output[Artifact],
):
    """Fine-tune the base model with TRL's SFTTrainer; loss on completion tokens only.

    Args:
        train_data: canonical training rows.
        validation_data: the split's validation slice (training groups set aside): the validation loss is
            measured on it every eval_steps; empty = none.
        base_model: tiny://<example>, a hub id, a local folder or a gs:// folder.
        system_prompt: system message rendered before every prompt (same as in evaluation).
        method: full or lora.
        max_steps: optimizer steps.
        batch_size: examples per step per device.
        learning_rate: peak learning rate.
        lr_scheduler: transformers scheduler name, e.g. cosine.
        warmup_ratio: share of steps spent warming up.
        weight_decay: AdamW decoupled weight decay (0 = none).
        max_length: tokens per example (prompt + completion); longer rows are truncated.
        seed: seed of init, dropout and data order.
        lora_r: LoRA rank (method lora).
        lora_alpha: LoRA alpha (method lora).
        lora_dropout: LoRA dropout (method lora).
        lora_target_modules: comma-separated module names, or all-linear.
        lora_modules_to_save: comma-separated modules trained in full beside the adapter.
        group_by_length: batch rows of similar length (less padding; on small data it learned slower).
        packing: pack rows into full sequences, padding-free (TRL bfd packing).
        backend: auto, hf or unsloth (auto = Unsloth when installed and a CUDA GPU is present).
        grad_accum: micro-batches per optimizer step (from the preflight plan); it divides batch_size.
        gradient_checkpointing: recompute activations in the backward pass (less memory, more compute);
            from the preflight plan, which resolves train.gradient_checkpointing auto.
        attn_implementation: auto, sdpa, flex_attention, flash_attention_2 or eager (components/train/speed.py;
            auto = the fastest one installed that is correct for the batch layout).
        kernels: auto, liger or none (Liger's fused kernels; auto = liger when installed on a GPU).
        eval_steps: steps between validation-loss passes over validation_data (and one at the end); 0 = none.
        select: last or best: the weights written are the last step's, or the best validation pass's.
        select_metric: what best and early stopping judge: eval_loss (lower is better) or eval_<metric>, a
            task metric of the task_eval_rows sample (higher is better).
        early_stopping_patience: stop after this many validation passes without improvement; 0 = never.
        task_eval_rows: validation rows generated and scored by the task's scorer at every validation pass
            (logged as eval_<metric>); 0 = validation loss only.
        task_type: structured, classification or generation (the scorer of the task metrics).
        output_schema: the JSON Schema of a structured task, as JSON text ("null" otherwise).
        labels: the label set of a classification task, as a JSON list.
        max_new_tokens: generation budget per validation row (eval.max_new_tokens).
        decoding: free, constrained or both (eval.decoding; both decodes constrained, its primary).
        checkpoint_steps: save a resumable checkpoint every N steps, and on SIGTERM. Checkpoints live next
            to the model in this step's output location, so a retried (preempted) task resumes from them.
        nodes: machines training together; more than 1 only inside a Vertex custom job with that many
            replicas (the finetune-multinode template); a mismatch stops the step before training.
        processes_per_node: data-parallel training processes on this node (torchrun); 0 = one per GPU.
            With more than one process, or on a Vertex custom job with worker pools (several nodes; see
            components/train/custom_job.py), training runs under torchrun and only node 0 writes outputs.
        experiment: MLflow experiment (and Vertex experiment on Vertex) of the training run.
        tracking_uri: MLflow tracking URI; empty = $MLFLOW_TRACKING_URI or the embedded sqlite store.
        config_hash: sha256 of the validated config, recorded as provenance.
        resume_from: checkpoints folder of an earlier run of the same config and data (its
            train-op/checkpoints) to continue from its newest complete checkpoint; empty = from step 0 (or
            from this task's own checkpoints when it is retried).
        model: weights or adapter, tokenizer and slmforge_model.json.
        metrics: first/final loss, final/best validation loss, the last pass's task metrics (final_eval_<metric>),
            the wall time of the validation passes, the step whose weights were written and whether early
            stopping ended training, steps, runtime, parameter counts, tokens/s, padding efficiency.
        loss_curve: folder with loss_curve.png (training and validation loss per step).
    """
    import os
    import shutil

    from components.common.provenance import stamp
    from components.train.checkpoints import prepare_checkpoints
    from components.train.core import TrainOptions
    from components.train.distributed import TrainJob, train_on_node

    opts = TrainOptions.from_inputs(
        method=method,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler=lr_scheduler,
        warmup_ratio=warmup_ratio,
        weight_decay=weight_decay,
        max_length=max_length,
        seed=seed,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_target_modules=lora_target_modules,
        lora_modules_to_save=lora_modules_to_save,
        group_by_length=group_by_length,
        packing=packing,
        backend=backend,
        grad_accum=grad_accum,
        gradient_checkpointing=gradient_checkpointing,
        attn_implementation=attn_implementation,
        kernels=kernels,
        checkpoint_dir=os.path.join(os.path.dirname(model.path), "checkpoints"),
        checkpoint_steps=checkpoint_steps,
        eval_steps=eval_steps,
        select=select,
        select_metric=select_metric,
        early_stopping_patience=early_stopping_patience,
        task_eval_rows=task_eval_rows,
        task_type=task_type,
        output_schema=output_schema,
        labels=labels,
        max_new_tokens=max_new_tokens,
        decoding=decoding,
    )
    prepare_checkpoints(
        opts.checkpoint_dir,
        {"config_hash": config_hash, "train_data_sha256": train_data.metadata.get("sha256", "")},
        resume_from=resume_from,
        nodes=nodes,
    )
    # One process, or torchrun on this node; a worker node of a multi-node job exits here (node 0 writes).
    result = train_on_node(
        nodes,
        processes_per_node,
        TrainJob(
            train_data.path,
            base_model,
            system_prompt,
            opts,
            model.path,
            experiment=experiment,
            tracking_uri=tracking_uri,
            artifact_dir=loss_curve.path,
            validation_path=validation_data.path,
        ),
    )
    model.metadata.update(
        {
            "method": method,
            "base_model": base_model,
            "framework": "transformers",
            "selected": result.selection,  # which weights these are, and why (train.select)
        }
    )
    stamp(
        model.metadata,
        model.path,
        config_hash=config_hash,
        upstream={"train_data": train_data.metadata.get("sha256", "")},
    )
    for key, value in result.metrics().items():
        metrics.log_metric(key, value)
    loss_curve.metadata.update({"mlflow_run_id": result.tracking.run_id, "file": "loss_curve.png"})
    shutil.rmtree(opts.checkpoint_dir, ignore_errors=True)  # the model is written: resuming is moot


# The same step as a Vertex AI custom job with worker pools: several machines (components/train/custom_job.py).
train_custom_job_op = as_custom_job(train_op)
