"""Config sections of the model and its training: the base model and method (with LoRA), the training
recipe, and the preflight checks that plan it. Each field is the one declaration of its option
(components/common/config_rules.py ``kfp``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.common.config_rules import Section, kfp, rule_error, share


class LoraConfig(Section):
    r: int = Field(16, description="adapter rank", json_schema_extra=kfp("lora_r", "preflight", "train"))
    alpha: int = Field(
        32, description="scaling numerator (alpha / r)", json_schema_extra=kfp("lora_alpha", "train")
    )
    dropout: float = Field(
        0.0, description="dropout on the adapter input", json_schema_extra=kfp("lora_dropout", "train")
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        description="module names, or all-linear",
        json_schema_extra=kfp("lora_target_modules", "preflight", "train"),
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="modules trained in full next to the adapter (e.g. embed_tokens for a random-init base)",
        json_schema_extra=kfp("lora_modules_to_save", "train"),
    )

    @model_validator(mode="after")
    def _in_range(self) -> LoraConfig:
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise rule_error(
                "MODEL-004", f"model.lora r={self.r}, alpha={self.alpha}, dropout={self.dropout}"
            )
        return self


class ModelConfig(Section):
    base: str = Field(
        ...,
        description="tiny://<example>, hub id, local dir, or gs:// dir",
        json_schema_extra=kfp("base_model", "clean", "preflight", "train", "evaluate_base"),
    )
    method: Literal["full", "lora", "qlora"] = Field(
        "lora",
        description="full fine-tune, LoRA adapter, or QLoRA (4-bit NF4 base, CUDA GPU only)",
        json_schema_extra=kfp("method", "preflight", "train"),
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    trust_remote_code: dict[str, str] = Field(
        default_factory=dict,
        description="model ids allowed to run their own model code, each pinned to a reviewed commit sha; "
        "any other model that ships code is refused (export loads the pinned revision)",
        json_schema_extra=kfp("trust_remote_code", "export"),
    )

    @field_validator("trust_remote_code")
    @classmethod
    def _pinned(cls, v: dict[str, str]) -> dict[str, str]:
        for model_id, rev in v.items():
            if not re.fullmatch(r"[0-9a-f]{40}", rev):
                raise rule_error(
                    "MODEL-003", f"model.trust_remote_code[{model_id!r}]={rev!r} is not a 40-hex commit sha"
                )
        return v

    @field_validator("base")
    @classmethod
    def _base(cls, v: str) -> str:
        ok = v.startswith(("tiny://", "gs://", "/", "./", "../")) or v.count("/") == 1
        if not ok or (v.endswith("/") and v.startswith("tiny://")):
            raise rule_error("MODEL-001", f"model.base={v!r} is none of the supported forms")
        if v.startswith("tiny://"):
            from components.common.home import repo_root

            examples = repo_root() / "examples"
            name = v.removeprefix("tiny://")
            if not any((examples / name / "data").glob("*.jsonl")):
                known = sorted(p.parent.parent.name for p in examples.glob("*/data/*.jsonl"))
                raise rule_error(
                    "MODEL-001",
                    f"model.base={v!r}: tiny:// models are built from an example's data, and examples/{name}/"
                    f"data has none; use one of {', '.join(f'tiny://{k}' for k in dict.fromkeys(known))}",
                )
        return v


# transformers.SchedulerType values (a test compares them with the installed transformers).
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)
# Upper bounds that catch a typo (an extra zero or three), far above any real run of a 0.5B-8B model.
MAX_STEPS, MAX_BATCH, MAX_LENGTH, MAX_NEW_TOKENS = 10_000_000, 65_536, 1_048_576, 65_536


class TrainConfig(Section):
    max_steps: int = Field(
        500, description="optimizer steps", json_schema_extra=kfp("max_steps", "preflight", "train")
    )
    batch_size: int = Field(
        32,
        description="examples per step, per device",
        json_schema_extra=kfp("batch_size", "preflight", "train"),
    )
    learning_rate: float = Field(
        2e-4, description="peak learning rate", json_schema_extra=kfp("learning_rate", "train")
    )
    lr_scheduler: str = Field(
        "cosine", description="transformers scheduler name", json_schema_extra=kfp("lr_scheduler", "train")
    )
    warmup_ratio: float = Field(
        0.03, description="share of steps spent warming up", json_schema_extra=kfp("warmup_ratio", "train")
    )
    weight_decay: float = Field(
        0.0,
        description="AdamW decoupled weight decay (0 = none)",
        json_schema_extra=kfp("weight_decay", "train"),
    )
    max_length: int = Field(
        256,
        description="tokens per example (prompt + completion); longer is truncated",
        json_schema_extra=kfp("max_length", "preflight", "train"),
    )
    seed: int = Field(
        42,
        description="seed of init, dropout and data order",
        json_schema_extra=kfp("train_seed", "train.seed"),
    )
    group_by_length: bool = Field(
        False,
        description="batch rows of similar length: less padding per step, but on small data it learned slower",
        json_schema_extra=kfp("group_by_length", "train"),
    )
    packing: bool = Field(
        False,
        description="pack several rows into one sequence (padding-free); no padding waste",
        json_schema_extra=kfp("packing", "preflight", "train"),
    )
    backend: Literal["auto", "hf", "unsloth"] = Field(
        "auto",
        description="auto: Unsloth when installed and a CUDA GPU is present, else Hugging Face",
        json_schema_extra=kfp("train_backend", "train.backend"),
    )
    checkpoint_steps: int = Field(
        100,
        description="save a resumable checkpoint every N steps (and on SIGTERM); a retry resumes from it",
        json_schema_extra=kfp("checkpoint_steps", "train"),
    )
    eval_steps: int = Field(
        100,
        description="steps between validation-loss passes over the validation slice (data.split."
        "validation_fraction) and one at the end; 0 = none",
        json_schema_extra=kfp("eval_steps", "train"),
    )
    select: Literal["last", "best"] = Field(
        "last",
        description="the model the step writes: the last step's weights, or those of the validation pass with "
        "the best select_metric (kept beside the checkpoints, so a resumed run keeps its best so far)",
        json_schema_extra=kfp("select", "train"),
    )
    select_metric: str = Field(
        "eval_loss",
        description="what best and early stopping judge: eval_loss (the validation loss, lower is better) or "
        "eval_<metric>, a task metric measured on train.task_eval_rows rows (eval_exact_match, eval_accuracy, "
        "...; higher is better)",
        json_schema_extra=kfp("select_metric", "train"),
    )
    task_eval_rows: int = Field(
        64,
        ge=0,
        description="validation rows generated (greedy, eval.decoding, eval.max_new_tokens) and scored by the "
        "task's scorer at every validation pass, logged as eval_<metric> beside eval_loss; 0 = loss only",
        json_schema_extra=kfp("task_eval_rows", "train"),
    )
    early_stopping_patience: int = Field(
        0,
        ge=0,
        description="stop training after this many validation passes without a better select_metric; 0 = never",
        json_schema_extra=kfp("early_stopping_patience", "train"),
    )
    experiment: str = Field(
        "", description="MLflow / Vertex experiment of the training runs; empty = the config name"
    )
    nodes: int = Field(
        1,
        description="machines training together; more than 1 runs the train step as a Vertex AI custom job "
        "with worker pools (components/train/custom_job.py), Vertex only",
        json_schema_extra=kfp("train_nodes", "train.nodes", "train_job.replica_count"),
    )
    processes_per_node: int = Field(
        0,
        description="data-parallel training processes per machine (torchrun); 0 = one per GPU",
        json_schema_extra=kfp("train_processes_per_node", "train.processes_per_node"),
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="recompute activations in the backward pass: far less memory, about a third more "
        "compute. auto = off when preflight's memory model says the plan fits without it, else on",
        json_schema_extra=kfp("gradient_checkpointing", "preflight"),
    )
    attn_implementation: Literal["auto", "sdpa", "flex_attention", "flash_attention_2", "eager"] = Field(
        "auto",
        description="attention kernel; auto = flash_attention_2 when flash-attn is installed on a bf16 GPU, "
        "else flex_attention for packing on a GPU, else sdpa. Packing needs flash_attention_2 or "
        "flex_attention (sdpa/eager only when named: they attend over the whole packed row)",
        json_schema_extra=kfp("attn_implementation", "train"),
    )
    kernels: Literal["auto", "liger", "none"] = Field(
        "auto",
        description="fused Triton kernels; liger = Liger's RMSNorm, RoPE and SwiGLU (CUDA, the gpu extra); "
        "auto = liger when installed on a GPU",
        json_schema_extra=kfp("train_kernels", "train.kernels"),
    )

    @field_validator("eval_steps")
    @classmethod
    def _not_negative(cls, v: int) -> int:
        if v < 0:
            raise rule_error("TRAIN-001", f"eval_steps={v} is negative (0 = no validation passes)")
        return v

    @field_validator("max_steps", "batch_size", "max_length", "learning_rate", "checkpoint_steps", "nodes")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise rule_error("TRAIN-001", f"{v} is not positive")
        return v

    @field_validator("lr_scheduler")
    @classmethod
    def _scheduler(cls, v: str) -> str:
        if v not in LR_SCHEDULERS:
            raise rule_error("TRAIN-003", f"lr_scheduler={v!r} is not a scheduler transformers knows")
        return v

    @model_validator(mode="after")
    def _in_range(self) -> TrainConfig:
        for name, top in (("max_steps", MAX_STEPS), ("batch_size", MAX_BATCH), ("max_length", MAX_LENGTH)):
            if getattr(self, name) > top:
                raise rule_error("TRAIN-004", f"train.{name}={getattr(self, name)} is above {top:,}")
        if not 0 <= self.warmup_ratio < 1:
            raise rule_error("TRAIN-004", f"train.warmup_ratio={self.warmup_ratio} is outside [0, 1)")
        if not 0 <= self.weight_decay < 1:
            raise rule_error("TRAIN-004", f"train.weight_decay={self.weight_decay} is outside [0, 1)")
        return self

    @field_validator("processes_per_node")
    @classmethod
    def _processes(cls, v: int) -> int:
        if v < 0:
            raise rule_error("TRAIN-002", f"processes_per_node={v}")
        return v


class PreflightConfig(Section):
    strict: bool = Field(
        True,
        description="fail the run before training when a preflight check finds an error",
        json_schema_extra=kfp("preflight_strict", "preflight.strict"),
    )
    truncation_threshold: float = Field(
        0.05,
        description="largest share of training rows allowed longer than train.max_length",
        json_schema_extra=kfp("preflight_truncation_threshold", "preflight.truncation_threshold"),
    )
    sample_rows: int = Field(
        2000,
        description="training rows rendered for the data checks; -1 = all",
        json_schema_extra=kfp("preflight_sample_rows", "preflight.sample_rows"),
    )

    @field_validator("truncation_threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        return share("truncation_threshold", v)
