"""preflight: will the run fit on the GPU, what will it cost, and do training and evaluation see the
data the way they should? It runs on CPU in seconds, before any GPU is asked for.

* Memory: the base model's shape comes from its config alone (a meta-device model: no weights are
  loaded), then a per-term estimate for the method (full | lora | qlora), sequence length, micro-batch
  and accelerator. The plan is the largest micro-batch that fits and the gradient accumulation that
  keeps micro_batch x grad_accum == train.batch_size. Formulas, units and assumptions are at
  ``estimate_memory``.
* Cost: tokens the GPUs will process / assumed (or measured) tokens per second x USD per hour from
  ``prices.py``, where every figure cites its source and a missing one is reported, not guessed.
* Data checks with the real tokenizer, on a seeded sample of the training table rendered exactly as
  training (TRL: the whole conversation through the chat template) and evaluation
  (``task.prompt_token_ids``) render it: pad == eos, BOS count, train/eval template agreement, rows
  with no trainable token after truncation, and the share of rows truncated.

Each check returns findings (code, severity, message naming the fix). ``check_strict`` raises
``PreflightFailed`` listing every error finding when strict mode is on; warnings never fail a run.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from components.common.options import StepOptions
from components.common.tables import count_rows, iter_row_batches
from components.preflight import prices

METHODS = ("full", "lora", "qlora")
GIB = float(2**30)
MAX_EXAMPLES = 5  # row ids quoted per finding


@dataclass
class PreflightOptions(StepOptions):
    LIST_INPUTS = ("lora_target_modules",)

    method: str = "lora"  # full | lora | qlora
    max_length: int = 256  # tokens per example (prompt + completion); train truncates longer rows
    batch_size: int = 32  # examples per optimizer step per device = micro_batch x grad_accum
    max_steps: int = 500  # optimizer steps
    accelerator_type: str = "NVIDIA_L4"  # Vertex accelerator type, a key of prices.ACCELERATORS
    accelerator_count: int = 1  # accelerators on the train step (data parallel: each holds the model)
    machine_type: str = ""  # "" = the machine type that carries accelerator_count of them
    strict: bool = False  # check_strict raises PreflightFailed when any finding is an error
    truncation_threshold: float = 0.05  # largest share of rows allowed to be longer than max_length
    max_new_tokens: int = 0  # evaluation's answer budget (eval.max_new_tokens); 0 = not checked
    sample_rows: int = 2000  # rows rendered for the data checks (seeded sample); -1 = every row
    tokens_per_s: float = 0.0  # measured training tokens/s of the whole job; 0 = assumed (prices.py)
    usd_per_hour: float = 0.0  # price of the machine; 0 = the price table (prices.py)
    lora_r: int = 16  # adapter rank (lora, qlora)
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    # Recompute activations in the backward pass (train.gradient_checkpointing). "auto": preflight decides
    # (``resolve_checkpointing``) and the train step runs with its decision.
    gradient_checkpointing: bool | str = True
    fused_lm_head: bool = True  # TRL >= 1.0 computes the loss through a tiled LM head (no full logits)
    seed: int = 0  # seed of the row sample

    @classmethod
    def decode(cls, name: str, value: Any) -> Any:
        """As StepOptions, and: no target modules = all-linear; gradient_checkpointing true | false | auto."""
        if name == "gradient_checkpointing":
            choice = str(value).lower()
            if choice not in ("true", "false", "auto"):
                raise ValueError(f"gradient_checkpointing={choice!r}: use true, false or auto")
            return {"true": True, "false": False}.get(choice, "auto")
        decoded = super().decode(name, value)
        return (decoded or ["all-linear"]) if name == "lora_target_modules" else decoded


@dataclass
class Finding:
    code: str  # stable reason code, e.g. PAD_IS_EOS
    severity: str  # error | warning | info; strict mode fails on errors only
    message: str  # what is wrong, the numbers, and the fix
    count: int = 0  # rows (of the sample) or items concerned
    examples: list[str] = field(default_factory=list)  # row ids


@dataclass
class ModelShape:
    """Parameter counts (not bytes) and dimensions of a causal LM, read from its config."""

    total_params: int
    embedding_params: int  # input embedding table: looked up, never multiplied
    lm_head_params: int  # output projection when untied; 0 when tied to the input embeddings
    block_linear_params: int  # nn.Linear weights other than the LM head (what QLoRA quantizes to NF4)
    other_params: int  # norms, biases, ...
    largest_linear: int  # weights of the largest nn.Linear (QLoRA dequantizes one at a time)
    layers: int
    hidden: int
    intermediate: int
    q_dim: int  # attention heads x head_dim
    kv_dim: int  # key/value heads x head_dim (GQA)
    vocab: int
    linears: list[tuple[str, int, int]] = field(default_factory=list)  # (module name, in, out)


@dataclass
class MemoryEstimate:
    """Peak GPU memory of one training step on one device, term by term, in GiB (2**30 bytes)."""

    method: str
    seq_len: int
    micro_batch: int
    accelerator_type: str
    capacity_gib: float
    trainable_params: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    lm_head_gib: float
    optimizer_step_gib: (
        float  # AdamW's temporaries during optimizer.step (not at the same time as activations)
    )
    overhead_gib: float  # CUDA context + allocator fragmentation
    total_gib: float

    @property
    def fits(self) -> bool:
        """Fits with headroom: MIN_HEADROOM of the device stays free (the estimate is not exact)."""
        return self.total_gib <= self.capacity_gib * (1 - MIN_HEADROOM)

    @property
    def headroom_gib(self) -> float:
        return self.capacity_gib - self.total_gib


@dataclass
class TrainPlan:
    micro_batch: int
    grad_accum: int  # micro_batch x grad_accum == batch_size
    fits: bool  # False: not even micro_batch 1 fits
    memory: MemoryEstimate  # at micro_batch
    tried: dict[int, float] = field(default_factory=dict)  # micro-batch -> estimated GiB


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
class DataStats:
    rows: int  # rows in the training table
    sampled: int  # rows rendered for the checks
    mean_tokens: float  # rendered example (prompt + completion), before truncation
    p95_tokens: int
    max_tokens: int
    truncated: int  # sampled rows longer than max_length
    zero_trainable: int  # sampled rows with no completion token left after truncation
    lengths: list[int] = field(default_factory=list, repr=False)


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
# Model shape: from the config, with weights on the meta device (nothing allocated, nothing read)


def load_model_config(base_model: str):
    """The transformers config of ``model.base`` (tiny://, hub id, local or gs:// folder)."""
    from transformers import AutoConfig

    from components.common.models import NO_REMOTE_CODE, check_loadable, resolve_base

    path = resolve_base(base_model)
    check_loadable(path)
    return AutoConfig.from_pretrained(path, **NO_REMOTE_CODE)


def model_shape(config) -> ModelShape:
    """Count parameters by building the model on the meta device: exact for any architecture
    transformers knows, in well under a second even for 8B, and no weight is read."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    in_emb, out_emb = model.get_input_embeddings(), model.get_output_embeddings()
    tied = out_emb is not None and out_emb.weight is in_emb.weight
    linears = [
        (name, m.in_features, m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not out_emb
    ]
    block_linear = sum(i * o for _, i, o in linears)
    total = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    embedding = in_emb.weight.numel()
    head = 0 if tied or out_emb is None else out_emb.weight.numel()
    hidden = text.hidden_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return ModelShape(
        total_params=total,
        embedding_params=embedding,
        lm_head_params=head,
        block_linear_params=block_linear,
        other_params=total - embedding - head - block_linear,
        largest_linear=max((i * o for _, i, o in linears), default=0),
        layers=text.num_hidden_layers,
        hidden=hidden,
        intermediate=getattr(text, "intermediate_size", None) or 4 * hidden,
        q_dim=heads * head_dim,
        kv_dim=kv_heads * head_dim,
        vocab=text.vocab_size,
        linears=linears,
    )


def lora_params(shape: ModelShape, r: int, target_modules: list[str]) -> int:
    """Adapter parameters: r x (in + out) per targeted nn.Linear (A is r x in, B is out x r).

    ``all-linear`` targets every nn.Linear but the output layer, as PEFT does; other names match a
    module whose name is the target or ends with ``.<target>`` (PEFT's rule for a list of names)."""
    if target_modules == ["all-linear"]:
        chosen = shape.linears
    else:
        chosen = [
            (n, i, o)
            for n, i, o in shape.linears
            if any(n == t or n.endswith("." + t) for t in target_modules)
        ]
    return sum(r * (i + o) for _, i, o in chosen)


# --------------------------------------------------------------------------------------------------
# Memory. Units: bytes per parameter (B/param) and bytes per token; results in GiB.
#
# Assumptions, all matching what the train stage runs (components/train/core.py + TRL's SFTTrainer):
# * The base model is loaded in bf16 and trained with bf16=True: no fp32 master copy of the weights,
#   gradients in the parameter dtype, torch AdamW moments in the parameter dtype.
# * Data parallel over accelerator_count GPUs (no FSDP/ZeRO): every GPU holds the whole model and
#   its own micro-batch, so the estimate is per GPU and does not depend on the count.
# * Attention through SDPA / flash kernels: no (seq x seq) score matrix is kept for backward.
# * The worst micro-batch: micro_batch rows padded to max_length.

BF16 = 2.0  # bytes per bf16 value
FP32 = 4.0
# NF4 (bitsandbytes, the QLoRA recipe): 4 bits = 0.5 B per weight, plus the quantization constants:
# one absmax per block of 64 weights, itself quantized to 8 bits with one fp32 constant per 256 blocks
# (double quantization): 1/64 + 4/(64*256) = 0.0159 B per weight (QLoRA paper, Dettmers et al. 2023,
# section 3: 0.127 bits per parameter). Embeddings, norms and the LM head stay bf16.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
# Trainable-parameter bytes (weight, gradient, two AdamW moments), by method:
# full:  bf16 weight 2 + bf16 gradient 2 + bf16 exp_avg 2 + bf16 exp_avg_sq 2 = 8 B/param. (Mixed
#        precision with fp32 master weights would be bf16 copy 2 + fp32 master 4 + fp32 gradient 4 +
#        fp32 moments 8 = 18 B/param; not what train does.)
# lora:  PEFT upcasts adapter weights to fp32 on a bf16 base (autocast_adapter_dtype=True):
#        4 + 4 + 8 = 16 B per adapter parameter; the frozen base is 2 B/param, no gradient, no state.
# qlora: TRL casts the adapter to bf16 on a quantized base: 2 + 2 + 4 = 8 B per adapter parameter.
TRAINABLE_BYTES = {  # (weight, gradient, optimizer state) in B per trainable parameter
    "full": (BF16, BF16, 2 * BF16),
    "lora": (FP32, FP32, 2 * FP32),
    "qlora": (BF16, BF16, 2 * BF16),
}
# torch's foreach AdamW (the default on CUDA) builds intermediate tensor lists about the size of the
# trainable parameters during optimizer.step: one extra copy in the parameter dtype. It happens after
# backward has freed the activations, so the peak is max(activations + LM head, this).
ADAMW_STEP_COPIES = 1.0
# TRL's fused LM head (trl.trainer.utils.add_fused_lm_head) projects hidden states to the vocabulary
# in tiles of at most 4096 tokens x 32768 vocabulary entries (bf16), one for forward and one for
# backward, instead of materialising (tokens x vocab) logits.
LM_HEAD_TILE_TOKENS, LM_HEAD_TILE_VOCAB = 4096, 32768
# Without it (TRL < 1.0), the logits are kept in bf16 (2 B), upcast to fp32 for the loss (4 B) and
# the fp32 log-softmax is saved for backward (4 B): 10 B per token per vocabulary entry.
UNFUSED_LOGITS_BYTES = BF16 + FP32 + FP32
CUDA_CONTEXT_GIB = 1.0  # CUDA context, cuBLAS/cuDNN workspaces, NCCL buffers: typically 0.5-1 GiB (assumed)
FRAGMENTATION = 0.10  # caching-allocator fragmentation, as a share of everything allocated
# A plan "fits" only when this share of the device stays free: the terms above are estimates (expect
# +-10%), and an out-of-memory error after waiting for a GPU costs more than a smaller micro-batch.
MIN_HEADROOM = 0.05


def activation_bytes_per_token_layer(shape: ModelShape) -> float:
    """Bytes a decoder layer keeps per token for backward without gradient checkpointing, bf16.

    Tensors saved by a Llama/Qwen/Mistral-style layer (pre-norm attention + gated MLP), in elements:
    layer input h (RMSNorm), normed input h (Q/K/V projections), Q q_dim and K, V 2 x kv_dim after
    rotary (SDPA), attention output q_dim (O projection), residual sum h (RMSNorm), normed h (gate/up
    projections), gate i, up i, act(gate) i and act(gate) x up i (down projection):
    4h + 2 q_dim + 2 kv_dim + 4i elements x 2 B. Written c x h bytes, c = 2 (4 + 2 q_dim/h + 2 kv_dim/h
    + 4 i/h): about 38 for Llama-2-7B (i = 2.7h, no GQA), 55 for Qwen2-7B (i = 5.3h, GQA).
    The same for every method: backward through frozen layers still needs these activations (LoRA
    adds r-sized intermediates, ignored; LoRA dropout > 0 would add a copy of each adapted input)."""
    h, i = shape.hidden, shape.intermediate
    return BF16 * (4 * h + 2 * shape.q_dim + 2 * shape.kv_dim + 4 * i)


def activation_bytes(shape: ModelShape, tokens: int, checkpointing: bool) -> float:
    """Activations of ``tokens`` tokens (micro_batch x seq_len) in bytes.

    Off: every layer keeps its full set, tokens x layers x c·h.
    On (HF gradient checkpointing, one checkpoint per decoder layer): each layer keeps only its input
    (2h bytes per token) and one layer at a time is recomputed in backward with its full set:
    tokens x (layers x 2h + c·h).
    Either way, backward through a layer also holds the gradients of that layer's activations (about
    one more c·h per token), and the final norm keeps its input and output (2 x 2h per token)."""
    per_layer = activation_bytes_per_token_layer(shape)
    if checkpointing:
        kept = shape.layers * BF16 * shape.hidden + per_layer
    else:
        kept = shape.layers * per_layer
    return tokens * (kept + per_layer + 2 * BF16 * shape.hidden)


def lm_head_bytes(shape: ModelShape, tokens: int, fused: bool) -> float:
    if fused:
        return 2 * min(tokens, LM_HEAD_TILE_TOKENS) * min(shape.vocab, LM_HEAD_TILE_VOCAB) * BF16
    return tokens * shape.vocab * UNFUSED_LOGITS_BYTES


def trainable_params(shape: ModelShape, method: str, lora_r: int, targets: list[str]) -> int:
    return shape.total_params if method == "full" else lora_params(shape, lora_r, targets)


def estimate_memory(
    shape: ModelShape,
    method: str,
    seq_len: int,
    micro_batch: int,
    accelerator_type: str,
    *,
    lora_r: int = 16,
    lora_target_modules: list[str] | None = None,
    gradient_checkpointing: bool = True,
    fused_lm_head: bool = True,
) -> MemoryEstimate:
    """Peak memory of one training step on one GPU:

    weights + gradients + optimizer states + max(activations + LM head, AdamW step temporaries),
    x (1 + FRAGMENTATION), + CUDA_CONTEXT_GIB.

    weights: full/lora 2 B/param (bf16) for the whole model; qlora NF4_BYTES per decoder-linear weight +
    2 B/param for embeddings, LM head, norms and biases + one bf16 dequantized copy of the largest linear.
    Adapters (lora/qlora) add their own weight bytes (TRAINABLE_BYTES). Gradients and optimizer states
    exist for trainable parameters only (all of them for full, the adapter for lora/qlora)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {', '.join(METHODS)}")
    if accelerator_type not in prices.ACCELERATORS:
        raise ValueError(
            f"accelerator_type={accelerator_type!r}: use one of {', '.join(prices.ACCELERATORS)}"
        )
    targets = lora_target_modules or ["all-linear"]
    trainable = trainable_params(shape, method, lora_r, targets)
    w_bytes, g_bytes, o_bytes = TRAINABLE_BYTES[method]
    if method == "full":
        weights = shape.total_params * BF16
    else:
        base = shape.total_params * BF16
        if method == "qlora":
            unquantized = shape.total_params - shape.block_linear_params
            base = shape.block_linear_params * NF4_BYTES + unquantized * BF16 + shape.largest_linear * BF16
        weights = base + trainable * w_bytes
    gradients = trainable * g_bytes
    optimizer = trainable * o_bytes
    tokens = micro_batch * seq_len
    activations = activation_bytes(shape, tokens, gradient_checkpointing)
    lm_head = lm_head_bytes(shape, tokens, fused_lm_head)
    step = trainable * w_bytes * ADAMW_STEP_COPIES
    allocated = weights + gradients + optimizer + max(activations + lm_head, step)
    overhead = allocated * FRAGMENTATION + CUDA_CONTEXT_GIB * GIB
    return MemoryEstimate(
        method=method,
        seq_len=seq_len,
        micro_batch=micro_batch,
        accelerator_type=accelerator_type,
        capacity_gib=prices.ACCELERATORS[accelerator_type].memory_gib,
        trainable_params=trainable,
        weights_gib=weights / GIB,
        gradients_gib=gradients / GIB,
        optimizer_gib=optimizer / GIB,
        activations_gib=activations / GIB,
        lm_head_gib=lm_head / GIB,
        optimizer_step_gib=step / GIB,
        overhead_gib=overhead / GIB,
        total_gib=(allocated + overhead) / GIB,
    )


def micro_batch_candidates(batch_size: int) -> list[int]:
    """Largest first: the batch itself, then every power of two that divides it (so micro x accum is
    exactly the batch; an odd batch leaves only itself and 1)."""
    powers = {1 << k for k in range(batch_size.bit_length()) if batch_size % (1 << k) == 0}
    return sorted(powers | {batch_size}, reverse=True)


def plan_batches(
    shape: ModelShape, options: PreflightOptions, accelerator_type: str | None = None
) -> TrainPlan:
    """The largest micro-batch that fits (memory grows with it, so the first fit from the top) and the
    gradient accumulation that makes up the configured batch. Not fitting at 1: fits=False, micro 1."""
    if options.batch_size < 1:
        raise ValueError(f"batch_size={options.batch_size}: use a positive number")
    tried: dict[int, float] = {}
    estimate = None
    for micro in micro_batch_candidates(options.batch_size):
        estimate = estimate_memory(
            shape,
            options.method,
            options.max_length,
            micro,
            accelerator_type or options.accelerator_type,
            lora_r=options.lora_r,
            lora_target_modules=options.lora_target_modules,
            gradient_checkpointing=options.gradient_checkpointing,
            fused_lm_head=options.fused_lm_head,
        )
        tried[micro] = round(estimate.total_gib, 3)
        if estimate.fits:
            return TrainPlan(micro, options.batch_size // micro, True, estimate, tried)
    return TrainPlan(1, options.batch_size, False, estimate, tried)


def resolve_checkpointing(
    shape: ModelShape, options: PreflightOptions
) -> tuple[PreflightOptions, list[Finding]]:
    """``options`` with gradient_checkpointing decided, and the finding that says why, when it was "auto":
    off when the plan without it fits at a micro-batch as large as with it (turning it off then costs
    memory only, and saves the recomputation: about a third of the compute), else on."""
    if options.gradient_checkpointing != "auto":
        return options, []
    with_it = plan_batches(shape, replace(options, gradient_checkpointing=True))
    without = plan_batches(shape, replace(options, gradient_checkpointing=False))
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
    padded = expected_padded_length(data.lengths, plan.micro_batch, options.max_length)
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
    for name, acc in prices.ACCELERATORS.items():
        count = min(acc.machine_types)
        plan = plan_batches(shape, options, accelerator_type=name)
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
# Rendering, exactly as training and evaluation do it


@dataclass
class Rendered:
    row_id: str
    ids: list[int]  # prompt + completion through the chat template, as TRL tokenizes a training row
    prompt_ids: list[int]  # prompt + generation header, as evaluation tokenizes it
    prompt_len: int  # common prefix of the two: where TRL starts the completion (its loss mask)

    def trainable(self, max_length: int) -> int:
        """Completion tokens left after truncation to max_length (TRL keeps the start)."""
        return max(0, min(len(self.ids), max_length) - self.prompt_len)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def render_rows(tokenizer, rows: list[dict[str, str]], system_prompt: str) -> list[Rendered]:
    """Training render: ``apply_chat_template(conversation, tokenize=True)``, which is what TRL's
    SFTTrainer calls for a conversational prompt/completion row (no special tokens added on top).
    Evaluation render: ``task.prompt_token_ids`` (add_generation_prompt=True)."""
    from components.common.task import prompt_token_ids, training_token_ids

    out = []
    for r, ids in zip(rows, training_token_ids(tokenizer, system_prompt, rows), strict=True):
        prompt = prompt_token_ids(tokenizer, system_prompt, r["prompt"], r["history"])
        out.append(Rendered(r["id"], ids, prompt, common_prefix(ids, prompt)))
    return out


def sample_rows(path: str | Path, n: int, seed: int) -> tuple[list[dict[str, str]], int]:
    """(a seeded uniform sample of at most ``n`` rows in table order, rows in the table); n < 0 = all."""
    total = count_rows(path)
    wanted = None if n < 0 or n >= total else set(random.Random(seed).sample(range(total), n))
    rows, index = [], 0
    for batch in iter_row_batches(path):
        for row in batch:
            if wanted is None or index in wanted:
                rows.append(row)
            index += 1
    return rows, total


# --------------------------------------------------------------------------------------------------
# Checks: each returns findings; none raises


def _ids(renders: list[Rendered]) -> list[str]:
    return [r.row_id for r in renders[:MAX_EXAMPLES]]


def check_pad_token(tokenizer) -> list[Finding]:
    """(a) pad == eos: padding is masked out of the labels, so the eos is too, and the loss never
    teaches the model to stop (or, depending on the collator, stops teaching it after the first)."""
    if tokenizer.pad_token_id is None:
        return [
            Finding(
                "NO_PAD_TOKEN",
                "error",
                "the tokenizer has no pad token. Fix: add a dedicated pad token (distinct from eos), e.g. "
                "tokenizer.add_special_tokens({'pad_token': '<|pad|>'}), and save it with the base model",
            )
        ]
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        return [
            Finding(
                "PAD_IS_EOS",
                "error",
                f"pad token {tokenizer.pad_token!r} is the eos token (id {tokenizer.eos_token_id}): eos is masked "
                "out of the labels with the padding, so the model never learns to stop. Fix: give the tokenizer "
                "a pad token of its own (an unused special token such as <|pad|> or <|finetune_right_pad_id|>)",
                1,
            )
        ]
    return []


def check_bos(tokenizer, renders: list[Rendered]) -> list[Finding]:
    """(b) BOS count in the training render, when the tokenizer has a BOS token: two or more = the chat
    template emits it more than once (error); none while the tokenizer itself prepends one = the model
    trains without the BOS it was pretrained with (warning). Also the text path, tokenizer(rendered
    text) with its default add_special_tokens=True, as a raw-text serving endpoint would tokenize the
    prompt: template BOS + tokenizer BOS = two (warning; training and evaluation do not take that path)."""
    bos = tokenizer.bos_token_id
    if bos is None or not renders:
        return []
    findings = []
    double = [r for r in renders if r.ids.count(bos) > 1]
    if double:
        findings.append(
            Finding(
                "DOUBLE_BOS",
                "error",
                f"{len(double)} of {len(renders)} sampled rows render with {double[0].ids.count(bos)} BOS tokens "
                f"({tokenizer.bos_token!r}) in training: the chat template emits it more than once. Fix: the "
                "template should emit {{ bos_token }} once, at the very start (not per message)",
                len(double),
                _ids(double),
            )
        )
    adds_bos = tokenizer("x")["input_ids"][:1] == [bos]
    missing = [r for r in renders if bos not in r.ids]
    if missing and adds_bos:
        findings.append(
            Finding(
                "BOS_MISSING",
                "warning",
                f"{len(missing)} of {len(renders)} sampled rows render without the BOS token "
                f"{tokenizer.bos_token!r} that the tokenizer prepends to plain text: the chat template does not "
                "emit it. Fix: start the template with {{ bos_token }} if the base model was pretrained with it",
                len(missing),
                _ids(missing),
            )
        )
    probe = renders[0]
    text = tokenizer.decode(probe.prompt_ids)
    text_bos = tokenizer(text)["input_ids"].count(bos)
    if text_bos > 1:
        findings.append(
            Finding(
                "DOUBLE_BOS_TEXT",
                "warning",
                f"tokenizing the rendered prompt as text with add_special_tokens=True gives {text_bos} BOS tokens "
                "(the template emits one, the tokenizer adds another). Training and evaluation are unaffected "
                "(they tokenize through apply_chat_template). Fix where a prompt is tokenized as text (e.g. a "
                "completions endpoint): pass add_special_tokens=False",
                1,
                [probe.row_id],
            )
        )
    return findings


def check_template_consistency(tokenizer, renders: list[Rendered]) -> list[Finding]:
    """(c) The evaluation prompt (add_generation_prompt=True) must be a prefix of the training render
    (prompt + completion): otherwise the model is trained on one context and evaluated/served on
    another, and TRL starts the loss where the two diverge."""
    bad = [r for r in renders if r.prompt_len < len(r.prompt_ids)]
    if not bad:
        return []
    r = bad[0]
    k = r.prompt_len
    return [
        Finding(
            "TEMPLATE_MISMATCH",
            "error",
            f"{len(bad)} of {len(renders)} sampled rows: the evaluation prompt is not a prefix of the training "
            f"render; they diverge at token {k}: eval {tokenizer.decode(r.prompt_ids[k : k + 8])!r} vs train "
            f"{tokenizer.decode(r.ids[k : k + 8])!r}. Fix: make the chat template render the generation "
            "prompt (add_generation_prompt=True) exactly as the start of an assistant turn",
            len(bad),
            _ids(bad),
        )
    ]


def check_trainable_tokens(renders: list[Rendered], max_length: int) -> list[Finding]:
    """(d) Rows whose completion is cut away entirely by truncation to max_length: zero trainable tokens,
    the row costs compute and teaches nothing."""
    empty = [r for r in renders if r.trainable(max_length) == 0]
    if not empty:
        return []
    worst = max(len(r.prompt_ids) for r in empty)
    return [
        Finding(
            "NO_TRAINABLE_TOKENS",
            "error",
            f"{len(empty)} of {len(renders)} sampled rows have no completion token left after truncation to "
            f"max_length {max_length} (longest prompt: {worst} tokens). Fix: raise train.max_length above "
            "the prompt length, shorten the prompts, or let clean drop them (data.clean.max_tokens)",
            len(empty),
            _ids(empty),
        )
    ]


def check_truncation(renders: list[Rendered], max_length: int, threshold: float) -> list[Finding]:
    """(e) Share of rows longer than max_length: their end, the completion's last tokens and the eos,
    is never trained on."""
    long = [r for r in renders if len(r.ids) > max_length]
    if not long or not renders:
        return []
    share = len(long) / len(renders)
    over = share > threshold
    longest = max(len(r.ids) for r in long)
    return [
        Finding(
            "TRUNCATION_RATE_EXCEEDED" if over else "ROWS_TRUNCATED",
            "error" if over else "warning",
            f"{len(long)} of {len(renders)} sampled rows ({share:.1%}) are longer than max_length {max_length} "
            f"tokens (longest {longest}){f' > the allowed {threshold:.1%}' if over else ''}; their ends are cut "
            "off, eos included. Fix: raise train.max_length, or let clean drop them (data.clean.max_tokens)",
            len(long),
            _ids(long),
        )
    ]


def check_eos_trained(tokenizer, renders: list[Rendered], max_length: int) -> list[Finding]:
    """The eos token must be among the trained completion tokens of an untruncated row, or the model
    never learns to end its answer (generation then stops only at max_new_tokens)."""
    eos = tokenizer.eos_token_id
    whole = [r for r in renders if len(r.ids) <= max_length]
    missing = [r for r in whole if eos not in r.ids[r.prompt_len :]]
    if eos is None or not missing:
        return []
    return [
        Finding(
            "EOS_NOT_TRAINED",
            "warning",
            f"{len(missing)} of {len(whole)} untruncated sampled rows have no eos token ({tokenizer.eos_token!r}) "
            "in their completion: the chat template ends an assistant turn with another token. Fix: set the "
            "tokenizer's eos to the template's end-of-turn token, or add that token to the model's "
            "generation_config.eos_token_id",
            len(missing),
            _ids(missing),
        )
    ]


# A target this close to evaluation's answer budget leaves no room for a longer answer to the same question.
ANSWER_BUDGET_MARGIN = 0.9


def check_answer_budget(renders: list[Rendered], max_new_tokens: int) -> list[Finding]:
    """Completions (end-of-turn tokens included) against evaluation's max_new_tokens: a longer one can
    never be answered whole (error: its answer is cut off and scores as unfinished, invalid JSON); one
    above 90% of the budget leaves a model no room (warning)."""
    if max_new_tokens <= 0 or not renders:
        return []
    lengths = {r.row_id: len(r.ids) - r.prompt_len for r in renders}
    longest = max(lengths.values())
    over = [r for r in renders if lengths[r.row_id] > max_new_tokens]
    near = [r for r in renders if lengths[r.row_id] > ANSWER_BUDGET_MARGIN * max_new_tokens]
    if not near:
        return []
    worst = over or near
    code, level = (
        ("TARGET_OVER_MAX_NEW_TOKENS", "error") if over else ("TARGET_NEAR_MAX_NEW_TOKENS", "warning")
    )
    what = "longer than" if over else f"above {ANSWER_BUDGET_MARGIN:.0%} of"
    return [
        Finding(
            code,
            level,
            f"{len(worst)} of {len(renders)} sampled completions are {what} eval.max_new_tokens {max_new_tokens} "
            f"(longest {longest} tokens): evaluation cuts such answers off, and an unfinished answer scores as "
            f"invalid. Fix: raise eval.max_new_tokens to at least {int(longest / ANSWER_BUDGET_MARGIN) + 1}",
            len(worst),
            _ids(worst),
        )
    ]


def check_memory(plan: TrainPlan, shape: ModelShape, options: PreflightOptions) -> list[Finding]:
    if plan.fits:
        return []
    m = plan.memory
    fits_on = [
        name for name in prices.ACCELERATORS if plan_batches(shape, options, accelerator_type=name).fits
    ]
    cheaper = [
        meth
        for meth in METHODS
        if meth != options.method and plan_batches(shape, replace(options, method=meth)).fits
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


# --------------------------------------------------------------------------------------------------
# The stage


def load_tokenizer_for_checks(path: str):
    """The tokenizer as every stage loads it; one without a pad token is loaded anyway (the pad check
    reports it) so the other checks still run."""
    from components.common.models import load_tokenizer

    try:
        return load_tokenizer(path)
    except ValueError:
        from transformers import AutoTokenizer

        from components.common.models import NO_REMOTE_CODE

        tok = AutoTokenizer.from_pretrained(path, **NO_REMOTE_CODE)
        if tok.pad_token is not None:
            raise
        return tok


def data_stats(renders: list[Rendered], rows: int, max_length: int) -> DataStats:
    lengths = sorted(len(r.ids) for r in renders)
    n = len(lengths)
    return DataStats(
        rows=rows,
        sampled=n,
        mean_tokens=sum(lengths) / n if n else 0.0,
        p95_tokens=lengths[min(n - 1, int(0.95 * n))] if n else 0,
        max_tokens=lengths[-1] if n else 0,
        truncated=sum(x > max_length for x in lengths),
        zero_trainable=sum(r.trainable(max_length) == 0 for r in renders),
        lengths=lengths,
    )


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
    options, decided = resolve_checkpointing(shape, options)
    tokenizer = load_tokenizer_for_checks(path)
    rows, total = sample_rows(train_path, options.sample_rows, options.seed)
    if not rows:
        raise ValueError(f"{train_path}: the training table is empty")
    renders = render_rows(tokenizer, rows, system_prompt)
    data = data_stats(renders, total, options.max_length)
    plan = plan_batches(shape, options)
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


# --------------------------------------------------------------------------------------------------
# Outputs


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
            f"micro-batch **{p.micro_batch}** x gradient accumulation **{p.grad_accum}** = batch {o.batch_size}; "
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
