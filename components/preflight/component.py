"""KFP component of the preflight stage (logic in core.py, price table in prices.py)."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from components.images import CPU_IMAGE, component


@component(CPU_IMAGE)
def preflight_op(
    train_data: Input[Dataset],
    base_model: str,
    system_prompt: str,
    method: str,
    max_length: int,
    packing: bool,
    batch_size: int,
    max_steps: int,
    accelerator_type: str,
    accelerator_count: int,
    machine_type: str,
    lora_r: int,
    lora_target_modules: str,
    strict: bool,
    truncation_threshold: float,
    max_new_tokens: int,
    sample_rows: int,
    gradient_checkpointing: str,
    config_hash: str,
    report: Output[Markdown],
    plan: Output[Artifact],
) -> NamedTuple(
    "PreflightOutputs", [("micro_batch", int), ("grad_accum", int), ("gradient_checkpointing", bool)]
):
    """Check on CPU, before a GPU is asked for, that the run fits, what it costs, and that the data
    renders the way training and evaluation expect.

    Args:
        train_data: canonical training rows (the split's train side).
        base_model: tiny://<example>, a hub id, a local or a gs:// folder (config and tokenizer only).
        system_prompt: system message rendered before every prompt (as in training and evaluation).
        method: full, lora or qlora.
        max_length: tokens per training example (prompt + completion); longer rows are truncated.
        packing: rows packed into sequences of max_length tokens (memory is planned at that width).
        batch_size: examples per optimizer step per device; the plan splits it into micro-batches.
        max_steps: optimizer steps (for the token count, hours and cost).
        accelerator_type: Vertex accelerator type of the train step, e.g. NVIDIA_L4.
        accelerator_count: accelerators on the train step.
        machine_type: Vertex machine type of the train step; empty = the one carrying the accelerators.
        lora_r: LoRA rank (lora, qlora).
        lora_target_modules: comma-separated module names, or all-linear.
        strict: fail the step when any check finds an error (after writing the report and plan).
        truncation_threshold: largest share of rows allowed longer than max_length.
        max_new_tokens: evaluation's answer budget; completions near or over it are reported (0 = not checked).
        sample_rows: training rows rendered for the data checks (a seeded sample); -1 = all.
        gradient_checkpointing: true, false or auto (decided here by the memory model; see Returns).
        config_hash: sha256 of the validated config, recorded as provenance.
        report: the findings, memory plan, cost and alternatives as Markdown.
        plan: plan.json: micro_batch, grad_accum, estimated memory, hours, cost and every finding.

    Returns:
        micro_batch: the largest micro-batch that fits (a divisor of batch_size).
        grad_accum: gradient accumulation steps; micro_batch x grad_accum == batch_size.
        gradient_checkpointing: whether the train step recomputes activations (auto resolved).
    """
    from components.common.provenance import stamp
    from components.preflight.core import check_strict, preflight
    from components.preflight.options import PreflightOptions
    from components.preflight.report import write_outputs

    opts = PreflightOptions.from_inputs(
        method=method,
        max_length=max_length,
        packing=packing,
        batch_size=batch_size,
        max_steps=max_steps,
        accelerator_type=accelerator_type,
        accelerator_count=accelerator_count,
        machine_type=machine_type,
        strict=strict,
        truncation_threshold=truncation_threshold,
        max_new_tokens=max_new_tokens,
        sample_rows=sample_rows,
        lora_r=lora_r,
        lora_target_modules=lora_target_modules,
        gradient_checkpointing=gradient_checkpointing,
    )
    result = preflight(train_data.path, base_model, system_prompt, opts)
    summary = write_outputs(result, report.path, plan.path)
    plan.metadata.update({k: v for k, v in summary.items() if isinstance(v, (bool, int, float, str))})
    report.metadata.update({"passed": summary["passed"], "errors": summary["errors"]})
    stamp(
        plan.metadata,
        plan.path,
        config_hash=config_hash,
        upstream={"train_data": train_data.metadata.get("sha256", "")},
    )
    check_strict(result)  # after the artifacts are written: the report says why the step failed
    return (result.plan.micro_batch, result.plan.grad_accum, result.options.gradient_checkpointing)
