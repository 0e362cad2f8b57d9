"""How the train step uses the machine: attention kernel, fused kernels, optimizer, data loading.

Every choice is a function of the options and of what the machine has (``Machine``), so each is unit tested
on CPU (tests/unit/test_speed.py) and printed by the train step.

Attention (``train.attn_implementation``):
  * ``flash_attention_2``: the flash-attn package on a CUDA GPU in bf16/fp16. Padded batches are unpadded;
    packed rows run as variable-length sequences (TRL passes their boundaries), so a packed example neither
    sees the others nor pays for them.
  * ``flex_attention``: torch's FlexAttention (CUDA; it has no backward on CPU). transformers builds a block
    mask from the packed rows' position ids: blocks across documents are skipped, not computed and masked.
  * ``sdpa`` / ``eager``: correct with packing (transformers derives a block-diagonal mask from the position
    ids when the trainer turns the KV cache off), but attention runs over the whole packed row: the cost
    grows with the square of the packed length. Allowed when asked for by name, with a warning.
  * ``auto``: flash_attention_2 when installed and usable; else, with packing, flex_attention on CUDA; else
    sdpa for padded batches. Packing with ``auto`` where neither packed kernel can run (e.g. on CPU) is
    refused with the ways out, rather than run slow without saying so.

Kernels (``train.kernels``): ``liger`` patches the model's RMSNorm, RoPE and SwiGLU with Liger's Triton
kernels (the liger-kernel package, in the ``gpu`` extra; CUDA only). TRL keeps its own fused LM head and
cross-entropy, so Liger's fused linear cross-entropy stays off. ``auto`` = liger when installed on CUDA.

The optimizer is fused AdamW (one kernel for all parameters; on CPU too, as transformers does by default).
On CUDA batches are collated by two dataloader workers into pinned memory; on CPU both stay off (two cores:
the workers would compete with training).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

ATTENTION = ("auto", "sdpa", "flex_attention", "flash_attention_2", "eager")
KERNELS = ("auto", "liger", "none")


class SpeedError(ValueError):
    """An attention or kernel choice this machine cannot run; the message names the fix."""


@dataclass(frozen=True)
class Machine:
    cuda: bool
    bf16: bool = False  # bf16 compute on the GPU
    flash_attn: bool = False  # the flash-attn package is importable
    liger: bool = False  # the liger-kernel package is importable

    @classmethod
    def here(cls) -> Machine:
        import torch

        cuda = torch.cuda.is_available()
        return cls(
            cuda=cuda,
            bf16=cuda and torch.cuda.is_bf16_supported(),
            flash_attn=importlib.util.find_spec("flash_attn") is not None,
            liger=importlib.util.find_spec("liger_kernel") is not None,
        )


def resolve_attention(requested: str, packing: bool, machine: Machine) -> tuple[str, str]:
    """(the attention implementation to load the model with, why): see the module docstring."""
    if requested not in ATTENTION:
        raise SpeedError(f"train.attn_implementation={requested!r}: use one of {', '.join(ATTENTION)}")
    flash = machine.cuda and machine.bf16 and machine.flash_attn
    if requested == "flash_attention_2" and not flash:
        raise SpeedError(
            "train.attn_implementation flash_attention_2 needs a CUDA GPU with bf16 and the flash-attn "
            f"package; here: cuda={machine.cuda}, bf16={machine.bf16}, flash-attn installed="
            f"{machine.flash_attn}. Fix: train.attn_implementation auto (or sdpa), or install flash-attn"
        )
    if requested == "flex_attention" and not machine.cuda:
        raise SpeedError(
            "train.attn_implementation flex_attention needs a CUDA GPU (FlexAttention has no backward pass "
            "on CPU). Fix: train.attn_implementation auto or sdpa"
        )
    if requested in ("sdpa", "eager"):
        if packing:
            return requested, (
                f"{requested} as configured; WARNING: with packing it attends over the whole packed row "
                "(correct, block-diagonal mask, but quadratic in the packed length); flash_attention_2 or "
                "flex_attention skip the blocks across examples"
            )
        return requested, "as configured"
    if requested != "auto":
        return requested, "as configured"
    if flash:
        return "flash_attention_2", "auto: flash-attn is installed on a bf16 GPU" + (
            " (packed rows run as variable-length sequences)" if packing else ""
        )
    if packing and machine.cuda:
        return (
            "flex_attention",
            "auto: packing on a GPU without flash-attn: FlexAttention with document masks",
        )
    if packing:
        raise SpeedError(
            "train.packing needs an attention kernel that skips the pairs of packed examples "
            "(flash_attention_2 or flex_attention, both CUDA only), and this machine has none. Fix: "
            "train.packing false, or train.attn_implementation sdpa to pack anyway (correct, but attention "
            "runs over the whole packed row)"
        )
    return "sdpa", "auto: padded batches; torch's scaled-dot-product attention"


def resolve_kernels(requested: str, machine: Machine) -> bool:
    """Whether to patch the model with Liger kernels."""
    if requested not in KERNELS:
        raise SpeedError(f"train.kernels={requested!r}: use one of {', '.join(KERNELS)}")
    usable = machine.cuda and machine.liger
    if requested == "liger" and not usable:
        raise SpeedError(
            "train.kernels liger needs a CUDA GPU and the liger-kernel package (pip install "
            f"'slmforge[gpu]'); here: cuda={machine.cuda}, liger-kernel installed={machine.liger}. Fix: "
            "train.kernels auto or none"
        )
    return usable if requested == "auto" else requested == "liger"


def trainer_speed_args(kernels: str, machine: Machine) -> dict:
    """The SFTConfig arguments for the optimizer, the kernels and the data loading on this machine."""
    liger = resolve_kernels(kernels, machine)
    workers = 2 if machine.cuda else 0
    return {
        "optim": "adamw_torch_fused",  # transformers' default too; said here so a new default cannot slip in
        "use_liger_kernel": liger,
        **({"liger_kernel_config": {"fused_linear_cross_entropy": False}} if liger else {}),
        "dataloader_num_workers": workers,
        "dataloader_pin_memory": machine.cuda,
        "dataloader_persistent_workers": workers > 0,
    }
