"""The memory model: how many GiB one training step needs on one GPU.

The base model's shape comes from its config alone (a meta-device model: no weights are loaded), then a
per-term estimate for the method (full | lora | qlora), sequence length, micro-batch and accelerator.
Formulas, units and assumptions are at ``estimate_memory``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from components.preflight import prices

METHODS = ("full", "lora", "qlora")
GIB = float(2**30)


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
