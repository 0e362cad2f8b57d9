"""The training plan and its cost.

* Plan: the largest micro-batch that fits (the memory model, memory.py) and the gradient accumulation that
  keeps micro_batch x grad_accum == train.batch_size; gradient checkpointing decided when it is "auto".
  Memory is planned by tokens, not rows: a micro-batch holds micro_batch x width tokens, where the width is
  what one of its rows occupies (``batch_width``): the packed length with packing, else the longest row of
  the data sample (a padded batch is as wide as its longest row), capped by max_length.
* Cost: tokens the GPUs will process / assumed (or measured) tokens per second x USD per hour from
  ``prices.py``, where every figure cites its source and a missing one is reported, not guessed; the same
  run on every other accelerator of the price table.
* Findings on both: the run does not fit, no machine type carries it, no price is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from components.preflight import prices
from components.preflight.checks import DataStats, Finding
from components.preflight.memory import METHODS, MemoryEstimate, ModelShape, estimate_memory
from components.preflight.options import PreflightOptions


@dataclass
class TrainPlan:
    micro_batch: int
    grad_accum: int  # micro_batch x grad_accum == batch_size
    fits: bool  # False: not even micro_batch 1 fits
    memory: MemoryEstimate  # at micro_batch
    tried: dict[int, float] = field(default_factory=dict)  # micro-batch -> estimated GiB
    width: int = 0  # tokens one row of a micro-batch occupies (batch_width)

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch * self.width


@dataclass
class CostEstimate:
    machine_type: str | None
    usd_per_hour: float | None
    price_basis: str
    tokens: float  # tokens the GPUs process, padding included
    tokens_per_s: float
    throughput_basis: str
    hours: float  # compute + prices.OVERHEAD_HOURS
    usd: float | None  # None when no price is known
    epochs: float  # passes over the training table


@dataclass
class Alternative:
    accelerator_type: str
    accelerator_count: int
    machine_type: str
    fits: bool
    micro_batch: int
    peak_gib: float
    capacity_gib: float
    hours: float
    usd: float | None


# --------------------------------------------------------------------------------------------------
# Plan: micro-batch and gradient accumulation


def micro_batch_candidates(batch_size: int) -> list[int]:
    """Largest first: the batch itself, then every power of two that divides it (so micro x accum is
    exactly the batch; an odd batch leaves only itself and 1)."""
    powers = {1 << k for k in range(batch_size.bit_length()) if batch_size % (1 << k) == 0}
    return sorted(powers | {batch_size}, reverse=True)


def batch_width(options: PreflightOptions, data: DataStats | None) -> int:
    """Tokens one row of a micro-batch occupies: with packing every sequence is full (max_length); a padded
    batch is as wide as its longest row, bounded by the longest row of the sample and by max_length."""
    if options.packing or data is None or not data.max_tokens:
        return options.max_length
    return min(options.max_length, data.max_tokens)


def plan_batches(
    shape: ModelShape,
    options: PreflightOptions,
    accelerator_type: str | None = None,
    width: int | None = None,
) -> TrainPlan:
    """The largest micro-batch that fits (memory grows with it, so the first fit from the top) and the
    gradient accumulation that makes up the configured batch, each row ``width`` tokens (default
    max_length; see ``batch_width``). Not fitting at 1: fits=False, micro 1."""
    if options.batch_size < 1:
        raise ValueError(f"batch_size={options.batch_size}: use a positive number")
    width = width or options.max_length
    tried: dict[int, float] = {}
    estimate = None
    for micro in micro_batch_candidates(options.batch_size):
        estimate = estimate_memory(
            shape,
            options.method,
            width,
            micro,
            accelerator_type or options.accelerator_type,
            lora_r=options.lora_r,
            lora_target_modules=options.lora_target_modules,
            gradient_checkpointing=options.gradient_checkpointing,
            fused_lm_head=options.fused_lm_head,
        )
        tried[micro] = round(estimate.total_gib, 3)
        if estimate.fits:
            return TrainPlan(micro, options.batch_size // micro, True, estimate, tried, width)
    return TrainPlan(1, options.batch_size, False, estimate, tried, width)


def resolve_checkpointing(
    shape: ModelShape, options: PreflightOptions, width: int | None = None
) -> tuple[PreflightOptions, list[Finding]]:
    """``options`` with gradient_checkpointing decided, and the finding that says why, when it was "auto":
    off when the plan without it fits at a micro-batch as large as with it (turning it off then costs
    memory only, and saves the recomputation: about a third of the compute), else on."""
    if options.gradient_checkpointing != "auto":
        return options, []
    with_it = plan_batches(shape, replace(options, gradient_checkpointing=True), width=width)
    without = plan_batches(shape, replace(options, gradient_checkpointing=False), width=width)
    off = without.fits and without.micro_batch >= with_it.micro_batch
    decided = replace(options, gradient_checkpointing=not off)
    gib = f"{without.memory.total_gib:.1f} of {without.memory.capacity_gib:.1f} GiB"
    message = (
        f"gradient checkpointing off: without it micro-batch {without.micro_batch} fits ({gib}); training "
        "skips the recomputation of activations"
        if off
        else f"gradient checkpointing on: without it the plan needs micro-batch {without.micro_batch} "
        f"({'fits' if without.fits else 'does not fit'}: {gib}) instead of {with_it.micro_batch}"
    )
    return decided, [Finding("GRADIENT_CHECKPOINTING_AUTO", "info", message)]


# --------------------------------------------------------------------------------------------------
# Cost


def flops_per_token(shape: ModelShape, method: str, seq_len: int, checkpointing: bool) -> float:
    """Training FLOPs per token. Forward F = 2 x (matmul weights: decoder linears + the vocab x hidden
    LM head) + causal attention 2 x layers x seq_len x q_dim (QK^T and AV, half the square).
    Backward: 2F for full (input and weight gradients), F for lora/qlora (input gradients; the adapter's
    weight gradients are negligible). Gradient checkpointing recomputes the forward: + F."""
    forward = (
        2 * (shape.block_linear_params + shape.vocab * shape.hidden)
        + 2 * shape.layers * seq_len * shape.q_dim
    )
    passes = (3 if method == "full" else 2) + (1 if checkpointing else 0)
    return passes * forward


def expected_padded_length(lengths: list[int], micro_batch: int, max_length: int) -> float:
    """Expected length of a micro-batch padded to its longest row (TRL pads to the longest in the
    batch), rows drawn at random: E[max of micro_batch draws] = sum_i x_(i) [(i/n)^m - ((i-1)/n)^m]
    over the sorted, truncated lengths x_(1) <= ... <= x_(n)."""
    xs = sorted(min(n, max_length) for n in lengths)
    n = len(xs)
    if n == 0:
        return float(max_length)
    return sum(x * (((i + 1) / n) ** micro_batch - (i / n) ** micro_batch) for i, x in enumerate(xs))


def estimate_cost(
    shape: ModelShape,
    options: PreflightOptions,
    plan: TrainPlan,
    data: DataStats,
    *,
    accelerator_type: str | None = None,
    accelerator_count: int | None = None,
    machine_type: str | None = None,
) -> CostEstimate:
    """hours = tokens / tokens_per_s / 3600 + prices.OVERHEAD_HOURS; cost = hours x USD per hour. The
    assumed rate is floored at prices.MIN_SECONDS_PER_MICRO_STEP per micro-batch step.

    tokens = max_steps x accelerators x batch_size x expected padded length of a micro-batch (what
    the GPUs compute, padding included; rows longer than max_length count as max_length)."""
    acc = accelerator_type or options.accelerator_type
    count = accelerator_count or options.accelerator_count
    machine = (
        machine_type
        if machine_type is not None
        else (options.machine_type or prices.machine_type_for(acc, count))
    )
    # packed sequences are full; a padded micro-batch is as long as its longest row
    padded = (
        options.max_length
        if options.packing
        else expected_padded_length(data.lengths, plan.micro_batch, options.max_length)
    )
    tokens = options.max_steps * count * options.batch_size * padded
    if options.tokens_per_s > 0:
        speed, basis = options.tokens_per_s, "measured (PreflightOptions.tokens_per_s)"
    else:
        fpt = flops_per_token(shape, options.method, options.max_length, options.gradient_checkpointing)
        speed = prices.assumed_tokens_per_s(acc, count, fpt, options.method)
        basis = (
            f"ASSUMED: {count} x {prices.ACCELERATORS[acc].bf16_tflops:.0f} TFLOP/s bf16 x MFU "
            f"{prices.ASSUMED_MFU} / {fpt:.3g} FLOP per token"
            + (f" x QLoRA factor {prices.QLORA_SPEED_FACTOR}" if options.method == "qlora" else "")
        )
    seconds = tokens / speed
    floor = options.max_steps * plan.grad_accum * prices.MIN_SECONDS_PER_MICRO_STEP
    if options.tokens_per_s <= 0 and floor > seconds:  # a small model: overhead-bound, not FLOP-bound
        seconds = floor
        basis += f"; floored at {prices.MIN_SECONDS_PER_MICRO_STEP} s per micro-step (overhead-bound)"
    hours = seconds / 3600 + prices.OVERHEAD_HOURS
    if options.usd_per_hour > 0:
        rate, price_basis = options.usd_per_hour, "given (PreflightOptions.usd_per_hour)"
    elif machine:
        rate, price_basis = prices.hourly_price(machine)
    else:
        rate, price_basis = None, f"no machine type carries {count} x {acc}"
    epochs = options.max_steps * count * options.batch_size / data.rows if data.rows else 0.0
    return CostEstimate(
        machine_type=machine,
        usd_per_hour=rate,
        price_basis=price_basis,
        tokens=tokens,
        tokens_per_s=tokens / seconds,
        throughput_basis=basis,
        hours=hours,
        usd=None if rate is None else hours * rate,
        epochs=epochs,
    )


def alternatives(shape: ModelShape, options: PreflightOptions, data: DataStats) -> list[Alternative]:
    """The same run on every accelerator of the price table, at its smallest machine shape."""
    out = []
    width = batch_width(options, data)
    for name, acc in prices.ACCELERATORS.items():
        count = min(acc.machine_types)
        plan = plan_batches(shape, options, accelerator_type=name, width=width)
        # a measured throughput or a given price belongs to the configured machine, not to this one
        opts = replace(options, machine_type="", tokens_per_s=0.0, usd_per_hour=0.0)
        cost = estimate_cost(
            shape,
            opts,
            plan,
            data,
            accelerator_type=name,
            accelerator_count=count,
            machine_type=acc.machine_types[count],
        )
        out.append(
            Alternative(
                name,
                count,
                acc.machine_types[count],
                plan.fits,
                plan.micro_batch,
                plan.memory.total_gib,
                acc.memory_gib,
                cost.hours,
                cost.usd if plan.fits else None,
            )
        )
    return out


# --------------------------------------------------------------------------------------------------
# Checks of the plan and its cost: each returns findings; none raises


def check_memory(plan: TrainPlan, shape: ModelShape, options: PreflightOptions) -> list[Finding]:
    if plan.fits:
        return []
    m = plan.memory
    fits_on = [
        name
        for name in prices.ACCELERATORS
        if plan_batches(shape, options, accelerator_type=name, width=plan.width).fits
    ]
    cheaper = [
        meth
        for meth in METHODS
        if meth != options.method
        and plan_batches(shape, replace(options, method=meth), width=plan.width).fits
    ]
    fixes = []
    if cheaper:
        fixes.append(f"model.method {' or '.join(cheaper)}")
    if fits_on:
        fixes.append(f"vertex.accelerator_type {' or '.join(fits_on)}")
    fixes.append("a smaller train.max_length")
    return [
        Finding(
            "DOES_NOT_FIT",
            "error",
            f"{options.method} on {options.accelerator_type} needs about {m.total_gib:.1f} GiB at micro-batch 1 "
            f"and max_length {options.max_length} ({m.capacity_gib:.1f} GiB on the device). Fix: "
            + ", or ".join(fixes),
            1,
        )
    ]


def check_machine(options: PreflightOptions, cost: CostEstimate) -> list[Finding]:
    acc = prices.ACCELERATORS[options.accelerator_type]
    if not options.machine_type and options.accelerator_count not in acc.machine_types:
        counts = ", ".join(str(c) for c in sorted(acc.machine_types))
        return [
            Finding(
                "NO_MACHINE_TYPE",
                "error",
                f"no machine type carries {options.accelerator_count} x {options.accelerator_type}. Fix: set "
                f"vertex.accelerator_count to one of {counts}",
                1,
            )
        ]
    if cost.usd is None:
        return [
            Finding(
                "PRICE_UNKNOWN",
                "warning",
                f"no price for {cost.machine_type}: {cost.price_basis}. Fix: add a sourced price to "
                "components/preflight/prices.py, or pass usd_per_hour",
            )
        ]
    return []
