"""The stage's outputs: plan.json (the numbers train needs and the estimate behind them) and report.md
(findings, memory plan, cost, other accelerators and the data sample, as Markdown)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.preflight import prices
from components.preflight.core import PreflightResult
from components.preflight.memory import MIN_HEADROOM


def plan_json(result: PreflightResult) -> dict[str, Any]:
    """The plan artifact: the numbers train needs and the estimate behind them (flat scalars first, so
    they can be copied into artifact metadata as they are)."""
    o, p, c, m = result.options, result.plan, result.cost, result.plan.memory
    return {
        "passed": result.passed,
        "method": o.method,
        "max_length": o.max_length,
        "batch_size": o.batch_size,
        "micro_batch": p.micro_batch,
        "grad_accum": p.grad_accum,
        "batch_width": p.width,
        "tokens_per_micro_batch": p.tokens_per_micro_batch,
        "gradient_checkpointing": o.gradient_checkpointing,
        "fits": p.fits,
        "est_memory_gib": round(m.total_gib, 2),
        "capacity_gib": m.capacity_gib,
        "headroom_gib": round(m.headroom_gib, 2),
        "accelerator_type": o.accelerator_type,
        "accelerator_count": o.accelerator_count,
        "machine_type": c.machine_type or "",
        "usd_per_hour": c.usd_per_hour if c.usd_per_hour is not None else -1.0,  # -1 = no price known
        "est_hours": round(c.hours, 3),
        "est_usd": round(c.usd, 2) if c.usd is not None else -1.0,
        "tokens_per_s": round(c.tokens_per_s, 1),
        "total_params": result.shape.total_params,
        "trainable_params": m.trainable_params,
        "errors": len(result.errors),
        "warnings": sum(f.severity == "warning" for f in result.findings),
        "price_basis": c.price_basis,
        "throughput_basis": c.throughput_basis,
        "memory_gib": {
            k: round(getattr(m, f"{k}_gib"), 3)
            for k in (
                "weights",
                "gradients",
                "optimizer",
                "activations",
                "lm_head",
                "optimizer_step",
                "overhead",
            )
        },
        "tried_micro_batches": {str(k): v for k, v in p.tried.items()},
        "findings": [
            {
                "code": f.code,
                "severity": f.severity,
                "message": f.message,
                "count": f.count,
                "examples": f.examples,
            }
            for f in result.findings
        ],
    }


def _usd(x: float | None) -> str:
    return "n/a" if x is None else f"${x:,.2f}"


def report_markdown(result: PreflightResult) -> str:
    o, p, c, m, d, s = result.options, result.plan, result.cost, result.plan.memory, result.data, result.shape
    verdict = "PASSED" if result.passed else f"FAILED ({len(result.errors)} error(s))"
    lines = [
        f"# Preflight: {verdict}",
        "",
        (
            f"`{result.base_model}`, {o.method}, max_length {o.max_length}, batch {o.batch_size}, {o.max_steps} steps "
            f"on {o.accelerator_count} x {o.accelerator_type}; {s.total_params / 1e6:,.1f} M parameters, "
            f"{m.trainable_params / 1e6:,.2f} M trainable. Checked in {result.seconds:.1f} s."
        ),
        "",
        "## Findings",
        "",
    ]
    if not result.findings:
        lines.append("None: every check passed.")
    for f in result.findings:
        ex = f" (e.g. {', '.join(f.examples)})" if f.examples else ""
        lines.append(f"- **{f.severity.upper()}** `{f.code}`: {f.message}{ex}")
    lines += [
        "",
        "## Memory plan",
        "",
        (
            f"micro-batch **{p.micro_batch}** x gradient accumulation **{p.grad_accum}** = batch {o.batch_size}, "
            f"planned by tokens: {p.tokens_per_micro_batch:,} per micro-batch ({p.micro_batch} rows of {p.width} "
            f"tokens: {'packed to max_length' if o.packing else 'the longest sampled row, at most max_length'}); "
            f"estimated peak **{m.total_gib:.2f} GiB** of {m.capacity_gib:.1f} GiB "
            f"({'fits, headroom' if p.fits else 'does NOT fit; headroom'} {m.headroom_gib:.2f} GiB, "
            f"{MIN_HEADROOM:.0%} required)."
        ),
        "",
        "| term | GiB |",
        "|---|---:|",
    ]
    for label, value in (
        ("weights", m.weights_gib),
        ("gradients", m.gradients_gib),
        ("optimizer states", m.optimizer_gib),
        (f"activations ({'checkpointed' if o.gradient_checkpointing else 'all layers'})", m.activations_gib),
        (f"LM head ({'fused tiles' if o.fused_lm_head else 'full logits'})", m.lm_head_gib),
        ("AdamW step temporaries (instead of activations)", m.optimizer_step_gib),
        ("CUDA context + fragmentation", m.overhead_gib),
        ("**total**", m.total_gib),
    ):
        lines.append(f"| {label} | {value:.3f} |")
    lines += [
        "",
        "micro-batches tried (GiB): " + ", ".join(f"{k}: {v:.2f}" for k, v in p.tried.items()),
        "",
        "## Cost",
        "",
        "| | |",
        "|---|---|",
        f"| machine | {c.machine_type or 'none'} |",
        f"| USD per hour | {_usd(c.usd_per_hour)} ({c.price_basis}) |",
        *(
            [
                f"| Vertex accelerator rate | ${rate:.2f} per GPU-hour plus the machine part (Vertex pricing page) |"
            ]
            if (rate := prices.VERTEX_ACCELERATOR_USD_PER_HOUR.get(o.accelerator_type))
            else []
        ),
        f"| tokens to process | {c.tokens:,.0f} ({c.epochs:.2f} epochs, padding included) |",
        f"| tokens per second | {c.tokens_per_s:,.0f} ({c.throughput_basis}) |",
        f"| hours | {c.hours:.2f} (includes {prices.OVERHEAD_HOURS} h fixed overhead, an assumption) |",
        f"| **estimated cost** | **{_usd(c.usd)}** |",
        "",
        "## Other accelerators (smallest machine of each; batch_size is per device)",
        "",
        "| accelerator | machine | fits | micro-batch | peak GiB | hours | cost |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for a in result.alternatives:
        lines.append(
            f"| {a.accelerator_count} x {a.accelerator_type} | {a.machine_type} | {'yes' if a.fits else 'no'} | "
            f"{a.micro_batch} | {a.peak_gib:.1f} / {a.capacity_gib:.0f} | {a.hours:.2f} | {_usd(a.usd)} |"
        )
    lines += [
        "",
        "## Data (sample)",
        "",
        (
            f"{d.sampled} of {d.rows} rows rendered with the chat template: mean {d.mean_tokens:.1f} tokens, p95 "
            f"{d.p95_tokens}, max {d.max_tokens}; {d.truncated} longer than max_length {o.max_length}, "
            f"{d.zero_trainable} with no trainable token."
        ),
        "",
    ]
    return "\n".join(lines)


def write_outputs(result: PreflightResult, report_path: str | Path, plan_path: str | Path) -> dict[str, Any]:
    """Write report.md and plan.json; return the plan (for artifact metadata)."""
    plan = plan_json(result)
    for path, text in (
        (report_path, report_markdown(result)),
        (plan_path, json.dumps(plan, indent=2) + "\n"),
    ):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    return plan
