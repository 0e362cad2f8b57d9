"""The train step's inputs for a short full fine-tune of tiny://travel, shared by the tests that call the
train component directly (tests/components) and through the multi-node custom job (tests/unit)."""

from __future__ import annotations

from typing import Any


def train_step_inputs(train_data: Any, system_prompt: str, **overrides: Any) -> dict[str, Any]:
    """Every input of ``train_op`` but its outputs; ``overrides`` replace any of them (or add the custom
    job's)."""
    inputs = dict(
        train_data=train_data,
        validation_data=train_data,  # read only when eval_steps > 0
        eval_steps=0,
        select="last",
        select_metric="eval_loss",
        early_stopping_patience=0,
        task_eval_rows=0,
        task_type="structured",
        output_schema="null",
        labels="[]",
        max_new_tokens=32,
        decoding="free",
        base_model="tiny://travel",
        system_prompt=system_prompt,
        method="full",
        max_steps=6,
        batch_size=8,
        learning_rate=3e-3,
        lr_scheduler="cosine",
        warmup_ratio=0.0,
        weight_decay=0.0,
        max_length=256,
        seed=42,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        lora_target_modules="all-linear",
        lora_modules_to_save="",
        group_by_length=False,
        packing=False,
        backend="hf",
        grad_accum=1,
        gradient_checkpointing=True,
        attn_implementation="auto",
        kernels="auto",
        checkpoint_steps=100,
        nodes=1,
        processes_per_node=1,
        experiment="",
        tracking_uri="",
        config_hash="c" * 64,
        resume_from="",
    )
    unknown = set(overrides) - set(inputs) - {"project", "location", "replica_count", "accelerator_type"}
    unknown -= {"accelerator_count", "machine_type", "service_account", "network"}
    if unknown:
        raise TypeError(f"train_step_inputs: no train input named {', '.join(sorted(unknown))}")
    return {**inputs, **overrides}
