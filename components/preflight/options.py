"""The preflight stage's options (``PreflightOptions``): the run to check, as the pipeline step and the
CLI pass it, and how strict the verdict is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.common.options import StepOptions


@dataclass
class PreflightOptions(StepOptions):
    LIST_INPUTS = ("lora_target_modules",)

    method: str = "lora"  # full | lora | qlora
    max_length: int = 256  # tokens per example (prompt + completion); train truncates longer rows
    packing: bool = False  # rows packed into sequences of max_length tokens (memory planned at full width)
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
    gradient_checkpointing: bool | str = "auto"
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
