"""preflight: will the run fit on the GPU, what will it cost, and do training and evaluation see the
data the way they should? It runs on CPU in seconds, before any GPU is asked for.

This module runs the stage (``preflight``) and gives its verdict. The parts: the memory model
(memory.py), the plan and its cost (plan.py), the tokenizer and data checks (checks.py), the report and
plan.json (report.py), the options (options.py) and the price table (prices.py).

Each check returns findings (code, severity, message naming the fix). ``check_strict`` raises
``PreflightFailed`` listing every error finding when strict mode is on; warnings never fail a run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from components.preflight import prices
from components.preflight.checks import (
    DataStats,
    Finding,
    check_answer_budget,
    check_bos,
    check_eos_trained,
    check_pad_token,
    check_template_consistency,
    check_trainable_tokens,
    check_truncation,
    data_stats,
    load_tokenizer_for_checks,
    render_rows,
    sample_rows,
)
from components.preflight.memory import METHODS, ModelShape, load_model_config, model_shape
from components.preflight.options import PreflightOptions
from components.preflight.plan import (
    Alternative,
    CostEstimate,
    TrainPlan,
    alternatives,
    batch_width,
    check_machine,
    check_memory,
    estimate_cost,
    plan_batches,
    resolve_checkpointing,
)


@dataclass
class PreflightResult:
    options: PreflightOptions
    base_model: str
    shape: ModelShape
    plan: TrainPlan
    cost: CostEstimate
    data: DataStats
    findings: list[Finding]
    alternatives: list[Alternative] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def passed(self) -> bool:
        return not self.errors


class PreflightFailed(RuntimeError):
    """Strict mode and at least one error finding; ``findings`` lists every one."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        lines = [f"[{f.code}] {f.message}" for f in findings]
        super().__init__(f"preflight failed ({len(findings)} error(s)):\n  " + "\n  ".join(lines))


# --------------------------------------------------------------------------------------------------
# The stage


def validate(options: PreflightOptions) -> None:
    if options.method not in METHODS:
        raise ValueError(f"method={options.method!r}: use one of {', '.join(METHODS)}")
    if options.accelerator_type not in prices.ACCELERATORS:
        raise ValueError(
            f"accelerator_type={options.accelerator_type!r}: use one of {', '.join(prices.ACCELERATORS)}"
        )
    for name in ("max_length", "batch_size", "max_steps", "accelerator_count"):
        if getattr(options, name) < 1:
            raise ValueError(f"{name}={getattr(options, name)}: use a positive number")
    if not 0 <= options.truncation_threshold <= 1:
        raise ValueError(f"truncation_threshold={options.truncation_threshold}: use a share in [0, 1]")


def preflight(
    train_path: str | Path, base_model: str, system_prompt: str, options: PreflightOptions
) -> PreflightResult:
    """Memory plan, cost and data checks for training ``base_model`` on the canonical table at
    ``train_path``. Never raises for a finding: ``check_strict`` decides."""
    from components.common.models import resolve_base

    start = time.perf_counter()
    validate(options)
    path = resolve_base(base_model)
    shape = model_shape(load_model_config(base_model))
    tokenizer = load_tokenizer_for_checks(path)
    rows, total = sample_rows(train_path, options.sample_rows, options.seed)
    if not rows:
        raise ValueError(f"{train_path}: the training table is empty")
    renders = render_rows(tokenizer, rows, system_prompt)
    data = data_stats(renders, total, options.max_length)
    width = batch_width(options, data)  # memory is planned by tokens: rows of this width
    options, decided = resolve_checkpointing(shape, options, width)
    plan = plan_batches(shape, options, width=width)
    cost = estimate_cost(shape, options, plan, data)
    findings = [
        *check_pad_token(tokenizer),
        *check_bos(tokenizer, renders),
        *check_template_consistency(tokenizer, renders),
        *check_trainable_tokens(renders, options.max_length),
        *check_truncation(renders, options.max_length, options.truncation_threshold),
        *check_eos_trained(tokenizer, renders, options.max_length),
        *check_answer_budget(renders, options.max_new_tokens),
        *check_memory(plan, shape, options),
        *check_machine(options, cost),
        *decided,
    ]
    return PreflightResult(
        options=options,
        base_model=base_model,
        shape=shape,
        plan=plan,
        cost=cost,
        data=data,
        findings=findings,
        alternatives=alternatives(shape, options, data),
        seconds=time.perf_counter() - start,
    )


def check_strict(result: PreflightResult, strict: bool | None = None) -> None:
    """Raise PreflightFailed listing every error finding when strict (default: the run's option)."""
    strict = result.options.strict if strict is None else strict
    if strict and result.errors:
        raise PreflightFailed(result.errors)
