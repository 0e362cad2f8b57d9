"""The one project config file: a pydantic model per section, every rule with an ID.

A config is loaded once (``load_config``) on the user's machine, validated, made self-contained
(relative paths resolved against the config file, the task's JSON Schema read in) and then
flattened (pipelines/parameters.py) into the explicit pipeline parameters that KFP compiles and the
Vertex console compares run by run. Components never read this file: they get parameters.

Each option is declared here once: name, type, default, help (``description``) and validation. A field the
pipelines take also names its pipeline parameter and the step inputs it reaches (``json_schema_extra=kfp(...)``),
from which the pipelines' signatures, docstrings and wiring are derived.

Every validation error names a rule ID (``TASK-002``), the field path and the fix. The rule table
is ``RULES`` below; ``docs`` of a rule is what the user should do.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from components.common.task import METRICS

# rule ID -> (what the rule says, how to fix it). Pydantic's own error types map onto CFG-00x.
RULES: dict[str, tuple[str, str]] = {
    "CFG-001": ("a required field is missing", "add the field; see examples/travel/config.yaml"),
    "CFG-002": ("unknown field", "remove it or fix its spelling; unknown keys are never ignored"),
    "CFG-003": ("wrong type or value", "give a value of the type shown"),
    "CFG-004": ("the config file cannot be read", "pass the path of a YAML mapping"),
    "CFG-005": (
        "malformed override",
        "write SECTION.FIELD=VALUE with a YAML value, e.g. train.max_steps=300 or eval.decoding=free",
    ),
    "TASK-001": ("structured tasks need a JSON Schema", "set task.schema to a .json file path"),
    "TASK-002": ("the JSON Schema cannot be loaded", "point task.schema at a readable JSON Schema file"),
    "EVAL-001": (
        "constrained decoding needs an output grammar",
        "use eval.decoding: free for generation tasks (constrained applies to structured and classification)",
    ),
    "TASK-003": (
        "task.labels does not fit task.type",
        "a classification task lists 2 or more distinct labels in task.labels; other types set none",
    ),
    "DATA-001": ("the data locator is empty", "set data.train to a JSONL path (local or gs://)"),
    "DATA-002": ("local data file not found", "fix the path; relative paths start at the config file"),
    "DATA-003": ("eval_fraction out of range", "use a fraction in (0, 0.5]"),
    "DATA-004": (
        "malformed data locator",
        "use PATH, jsonl:/json:/csv:/parquet:PATH (local or gs://), or hf:NAME:SPLIT",
    ),
    "DATA-005": ("rate or threshold out of range", "use a number in [0, 1] (near_dup_threshold: -1 = off)"),
    "MODEL-001": (
        "unrecognised base model",
        "use tiny://<example>, a hub id (org/name), a local directory, or a gs:// directory",
    ),
    "MODEL-002": ("LoRA settings given for a full fine-tune", "set model.method: lora, or drop model.lora"),
    "MODEL-003": (
        "trust_remote_code entry without a pinned commit",
        "map the model id to the full 40-hex commit sha of the code you reviewed: {org/name: <sha>}",
    ),
    "EXPORT-005": (
        "export tolerance out of range",
        "use a number in [0, 1]: the largest allowed metric drop",
    ),
    "REG-001": (
        "the Vertex registry needs a project and a gs:// staging location",
        "set vertex.project, and vertex.pipeline_root or registry.staging_uri (gs://...)",
    ),
    "TRAIN-001": ("non-positive training setting", "use a positive number"),
    "TRAIN-002": (
        "processes_per_node is negative",
        "use 0 (one training process per GPU) or a positive process count",
    ),
    "GATE-001": (
        "gate rule needs exactly one bound",
        "give exactly one of min:, max:, equals: or not_worse_than: (write one rule per bound)",
    ),
    "GATE-002": ("gate rule names an unknown metric", "use one of the metrics the task reports"),
    "GATE-003": (
        "not_worse_than names an unknown baseline",
        "use base (the base model), champion (the registered model) or retrieval (the retrieval baseline)",
    ),
    "GATE-004": (
        "margin is negative",
        "use margin >= 0: how much worse than the baseline is tolerated (0 = not confidently worse)",
    ),
    "GATE-005": (
        "margin or required given on a rule that compares with no baseline",
        "add not_worse_than: base|champion|retrieval, or drop margin/required",
    ),
    "GATE-006": (
        "bootstrap setting out of range",
        "use gates.bootstrap.resamples >= 100 and 0 < confidence < 1",
    ),
    "TRAIN-003": (
        "unknown learning-rate scheduler",
        "use a transformers SchedulerType name (LR_SCHEDULERS in components/common/config.py), e.g. cosine",
    ),
    "TRAIN-004": (
        "value out of range",
        "warmup_ratio and weight_decay in [0, 1); max_steps <= 10,000,000, batch_size <= 65,536, max_length <= 1,048,576",
    ),
    "MODEL-004": ("LoRA setting out of range", "use r >= 1, alpha > 0 and 0 <= dropout < 1"),
    "EVAL-002": (
        "evaluation size out of range",
        "use max_new_tokens in 1..65,536, batch_size >= 1, and max_examples -1 (all) or >= 1",
    ),
    "DATA-006": ("max_row_bytes is not positive", "use a number of bytes >= 1 (default 1,000,000)"),
    "GATE-007": (
        "threshold outside [0, 1]",
        "metrics are shares in [0, 1]: use a min, max or equals in [0, 1]",
    ),
    "CFG-006": ("the same key twice in one YAML mapping", "keep one; YAML would silently use the last"),
    "CFG-007": (
        "a secret in the config",
        (
            "configs become pipeline parameters that the console, CI logs and the registry show: pass "
            "credentials through the environment (MLFLOW_TRACKING_USERNAME / _PASSWORD) or Secret Manager"
        ),
    ),
    "VTX-001": (
        "unknown accelerator",
        "use an accelerator type of components/preflight/prices.py (e.g. NVIDIA_L4) and a count >= 1",
    ),
    "VTX-003": (
        "malformed VPC network",
        "use the full name projects/<project number>/global/networks/<network>, or leave it empty",
    ),
    "VTX-004": (
        "invalid Vertex label",
        "keys: 1-63 of a-z 0-9 _ - from a letter; values: 0-63 of a-z 0-9 _ -; at most 62 (submit adds 2)",
    ),
}


class ConfigError(ValueError):
    """A config that breaks one or more rules; ``str()`` lists each as ``RULE at field: msg. Fix: ...``."""

    def __init__(self, violations: list[tuple[str, str, str]]):
        self.violations = violations  # (rule_id, field path, message)
        lines = []
        for rule, where, msg in violations:
            fix = RULES.get(rule, ("", ""))[1]
            lines.append(f"[{rule}] {where}: {msg}" + (f". Fix: {fix}" if fix else ""))
        super().__init__("invalid config:\n  " + "\n  ".join(lines))


def _rule(rule: str, msg: str) -> PydanticCustomError:
    # the message goes in as context: braces in it ('^{1,62}$') are text, not format fields
    return PydanticCustomError(rule, "{msg}", {"msg": msg})


def kfp(param: str, *to: str, encode: str = "") -> dict[str, Any]:
    """A config field's route into the pipelines, as its ``json_schema_extra`` (pipelines/parameters.py
    reads it): pipeline parameter ``param``, received by each ``STEP`` (as an input named ``param``) or
    ``STEP.INPUT``; ``encode="json"`` for a list that stays a JSON list (a list of names is otherwise
    comma-separated text)."""
    return {"kfp": {"param": param, "to": list(to), **({"encode": encode} if encode else {})}}


def _share(name: str, v: float) -> float:
    """A share of rows: a number in [0, 1] (rule DATA-005)."""
    if not 0 <= v <= 1:
        raise _rule("DATA-005", f"{name}={v} is outside [0, 1]")
    return v


class _Section(BaseModel):
    # NaN and infinity are never a setting; a YAML true/false is never a number (max_steps: true is not 1)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, f in cls.model_fields.items():
                value = data.get(f.alias or name, data.get(name))
                if isinstance(value, bool) and f.annotation in (int, float, int | None, float | None):
                    raise _rule("CFG-003", f"{name}={value} is a boolean; give a number")
        return data


class TaskConfig(_Section):
    type: Literal["structured", "classification", "generation"] = Field(
        "structured",
        description="structured: JSON output checked by a schema; classification: one label of task.labels; "
        "generation: free text",
        json_schema_extra=kfp("task_type", "task", "gate"),
    )
    labels: list[str] = Field(
        default_factory=list,
        description="the label set of a classification task",
        json_schema_extra=kfp("labels", "ingest", "task", encode="json"),
    )
    system_prompt: str = Field(
        "",
        description="system message put before every prompt, in training and eval",
        json_schema_extra=kfp("system_prompt", "clean", "preflight", "train", "task"),
    )
    schema_path: str | None = Field(None, alias="schema", description="JSON Schema file of the output")
    output_schema: dict[str, Any] | None = Field(
        None, description="the schema itself; filled from task.schema at load time"
    )
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _needs_schema(self) -> TaskConfig:
        if self.type == "structured" and self.output_schema is None:
            raise _rule("TASK-001", "task.type is structured but no schema was given")
        if self.type == "classification" and len(set(self.labels)) < 2:
            raise _rule("TASK-003", f"task.type is classification but task.labels is {self.labels}")
        if self.type != "classification" and self.labels:
            raise _rule("TASK-003", f"task.labels is set but task.type is {self.type}")
        if self.output_schema is not None:
            import jsonschema

            try:  # a broken schema is refused here, not by preflight's or ingest's traceback
                jsonschema.validators.validator_for(self.output_schema).check_schema(self.output_schema)
            except jsonschema.SchemaError as e:
                where = "/".join(str(p) for p in e.absolute_path) or "(root)"
                raise _rule("TASK-002", f"the JSON Schema is invalid at {where}: {e.message}") from None
        return self


class SplitConfig(_Section):
    eval_fraction: float = Field(
        0.1,
        description="share of rows held out for evaluation, in whole groups",
        json_schema_extra=kfp("eval_fraction", "split"),
    )
    seed: int = Field(
        13,
        description="seed of the group shuffle; same seed + data = same split",
        json_schema_extra=kfp("split_seed", "split.seed"),
    )
    cover: list[str] | None = Field(
        None,
        description="fields whose every value must appear in train; null = the schema's enum/const values, "
        "[completion] = the whole target is a label, [] = no guarantee",
    )

    @field_validator("eval_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0 < v <= 0.5:
            raise _rule("DATA-003", f"eval_fraction={v} is outside (0, 0.5]")
        return v


class FieldMap(_Section):
    prompt: str = Field(
        "prompt",
        description="source column with the user prompt text",
        json_schema_extra=kfp("prompt_field", "ingest"),
    )
    completion: str = Field(
        "completion",
        description="source column with the target output text",
        json_schema_extra=kfp("completion_field", "ingest"),
    )
    group: str | None = Field(
        "group",
        description="source column with a group id; null = every row alone",
        json_schema_extra=kfp("group_field", "ingest"),
    )
    id: str | None = Field(
        "id",
        description="source column with a row id; null = use the row number",
        json_schema_extra=kfp("id_field", "ingest"),
    )


class CleanConfig(_Section):
    pii: Literal["redact", "block", "off"] = Field(
        "redact",
        description="redact: replace PII with <TYPE>; block: reject the row; off: keep it",
        json_schema_extra=kfp("pii", "clean"),
    )
    pii_types: list[Literal["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS"]] = Field(
        default_factory=lambda: ["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS"],
        description="PII types to look for (names are not detected: no offline recogniser)",
        json_schema_extra=kfp("pii_types", "clean"),
    )
    near_dup_threshold: float = Field(
        0.9,
        description="Jaccard (character 5-grams) at which a row is a near-duplicate; -1 = exact only",
        json_schema_extra=kfp("near_dup_threshold", "clean"),
    )
    max_tokens: int | None = Field(
        None,
        description="tokens per rendered example; longer rows are rejected. null = train.max_length, -1 = off",
    )

    @field_validator("near_dup_threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        if v != -1 and not 0 < v < 1:  # 1.0 would be exact duplicates, which are always removed
            raise _rule("DATA-005", f"near_dup_threshold={v} is outside (0, 1) and not -1")
        return v


SHAPES = ("auto", "prompt_completion", "alpaca", "messages", "sharegpt")


class LabelsConfig(_Section):
    normalize: list[Literal["strip", "lower"]] = Field(
        default_factory=list,
        description="classification targets: strip = trim surrounding whitespace, lower = match task.labels "
        "ignoring case; a target then takes the declared spelling. Labels still unknown are LABEL_UNKNOWN",
        json_schema_extra=kfp("label_normalize", "ingest"),
    )


class ChatConfig(_Section):
    fix: list[Literal["drop_leading_assistant", "drop_trailing_user"]] = Field(
        default_factory=list,
        description="repairs for chat exports, counted in the ingest report: drop an assistant turn that opens "
        "a conversation, and a user turn that ends one unanswered (else such rows are BAD_ROLE_ORDER)",
        json_schema_extra=kfp("chat_fixes", "ingest"),
    )


class DataConfig(_Section):
    train: str = Field(
        ...,
        description="locator of the training data (see components/ingest/sources.py)",
        json_schema_extra=kfp("train_data", "ingest.train_locator"),
    )
    eval: str = Field(
        "",
        description="optional locator of an explicit eval set; empty = split from train",
        json_schema_extra=kfp("eval_data", "ingest.eval_locator"),
    )
    shape: Literal["auto", "prompt_completion", "alpaca", "messages", "sharegpt"] = Field(
        "auto", description="row layout; auto = detect from 20 sample rows (needs confidence >= 0.8)"
    )
    fields: FieldMap = Field(default_factory=FieldMap, description="source column names")
    max_reject_rate: float = Field(
        0.01,
        description="fail the run when more rows than this share are rejected",
        json_schema_extra=kfp("max_reject_rate", "ingest", "clean"),
    )
    max_row_bytes: int = Field(
        1_000_000,
        description="larger source rows are rejected (ROW_TOO_LARGE)",
        json_schema_extra=kfp("max_row_bytes", "ingest"),
    )
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)

    @field_validator("train", "eval")
    @classmethod
    def _locator(cls, v: str, info) -> str:
        if info.field_name == "train" and not v.strip():
            raise _rule("DATA-001", "data.train is empty")
        if v.strip():
            from components.ingest.sources import LocatorError, parse_locator

            try:
                parse_locator(v)
            except LocatorError as e:
                raise _rule("DATA-004", str(e)) from None
        return v

    @field_validator("max_reject_rate")
    @classmethod
    def _rate(cls, v: float) -> float:
        return _share("max_reject_rate", v)

    @field_validator("max_row_bytes")
    @classmethod
    def _row_bytes(cls, v: int) -> int:
        if v < 1:
            raise _rule("DATA-006", f"max_row_bytes={v}")
        return v

    @property
    def effective_shape(self) -> str:
        """auto, unless data.fields names the prompt/completion columns (a field map in the config)."""
        if self.shape == "auto" and {"prompt", "completion"} & self.fields.model_fields_set:
            return "prompt_completion"
        return self.shape


class LoraConfig(_Section):
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
            raise _rule("MODEL-004", f"model.lora r={self.r}, alpha={self.alpha}, dropout={self.dropout}")
        return self


class ModelConfig(_Section):
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
                raise _rule(
                    "MODEL-003", f"model.trust_remote_code[{model_id!r}]={rev!r} is not a 40-hex commit sha"
                )
        return v

    @field_validator("base")
    @classmethod
    def _base(cls, v: str) -> str:
        ok = v.startswith(("tiny://", "gs://", "/", "./", "../")) or v.count("/") == 1
        if not ok or (v.endswith("/") and v.startswith("tiny://")):
            raise _rule("MODEL-001", f"model.base={v!r} is none of the supported forms")
        if v.startswith("tiny://"):
            from components.common.home import repo_root

            examples = repo_root() / "examples"
            name = v.removeprefix("tiny://")
            if not any((examples / name / "data").glob("*.jsonl")):
                known = sorted(p.parent.parent.name for p in examples.glob("*/data/*.jsonl"))
                raise _rule(
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


class TrainConfig(_Section):
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
        json_schema_extra=kfp("packing", "train"),
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

    @field_validator("max_steps", "batch_size", "max_length", "learning_rate", "checkpoint_steps", "nodes")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise _rule("TRAIN-001", f"{v} is not positive")
        return v

    @field_validator("lr_scheduler")
    @classmethod
    def _scheduler(cls, v: str) -> str:
        if v not in LR_SCHEDULERS:
            raise _rule("TRAIN-003", f"lr_scheduler={v!r} is not a scheduler transformers knows")
        return v

    @model_validator(mode="after")
    def _in_range(self) -> TrainConfig:
        for name, top in (("max_steps", MAX_STEPS), ("batch_size", MAX_BATCH), ("max_length", MAX_LENGTH)):
            if getattr(self, name) > top:
                raise _rule("TRAIN-004", f"train.{name}={getattr(self, name)} is above {top:,}")
        if not 0 <= self.warmup_ratio < 1:
            raise _rule("TRAIN-004", f"train.warmup_ratio={self.warmup_ratio} is outside [0, 1)")
        if not 0 <= self.weight_decay < 1:
            raise _rule("TRAIN-004", f"train.weight_decay={self.weight_decay} is outside [0, 1)")
        return self

    @field_validator("processes_per_node")
    @classmethod
    def _processes(cls, v: int) -> int:
        if v < 0:
            raise _rule("TRAIN-002", f"processes_per_node={v}")
        return v


class PreflightConfig(_Section):
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
        return _share("truncation_threshold", v)


class EvalConfig(_Section):
    decoding: Literal["free", "constrained", "both"] = Field(
        "free",
        description="free; constrained (output held to the schema or the label set; structured and "
        "classification tasks); both (constrained is primary, free reported beside it)",
        json_schema_extra=kfp("eval_decoding", "decode.decoding"),
    )
    max_new_tokens: int = Field(
        128,
        description="generation budget per example, in tokens",
        json_schema_extra=kfp("eval_max_new_tokens", "decode.max_new_tokens", "preflight.max_new_tokens"),
    )
    batch_size: int = Field(
        64,
        description="prompts generated together",
        json_schema_extra=kfp("eval_batch_size", "decode.batch_size"),
    )
    max_examples: int = Field(
        -1,
        description="evaluate at most this many rows; -1 = all",
        json_schema_extra=kfp("eval_max_examples", "task.max_examples"),
    )

    @model_validator(mode="after")
    def _in_range(self) -> EvalConfig:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise _rule(
                "EVAL-002", f"eval.max_new_tokens={self.max_new_tokens} is outside 1..{MAX_NEW_TOKENS:,}"
            )
        if self.batch_size < 1:
            raise _rule("EVAL-002", f"eval.batch_size={self.batch_size} is below 1")
        if self.max_examples == 0 or self.max_examples < -1:
            raise _rule("EVAL-002", f"eval.max_examples={self.max_examples}: use -1 (all) or a count >= 1")
        return self


class ExportConfig(_Section):
    tolerance: float = Field(
        0.01,
        description="largest drop of a gated metric allowed between the adapter's evaluation and the "
        "exported (merged) model's; a larger drop fails the export and nothing is registered",
        json_schema_extra=kfp("export_tolerance", "export.tolerance"),
    )
    quantize: list[Literal["nf4", "int8"]] = Field(
        default_factory=list,
        description="quantized variants written beside the merged weights (bitsandbytes), each evaluated",
        json_schema_extra=kfp("export_quantize", "export.quantize"),
    )
    quantized_tolerance: float = Field(
        0.05,
        description="largest drop of a gated metric allowed for a quantized variant vs the adapter",
        json_schema_extra=kfp("export_quantized_tolerance", "export.quantized_tolerance"),
    )

    @field_validator("tolerance", "quantized_tolerance")
    @classmethod
    def _tolerance(cls, v: float, info) -> float:
        if not 0 <= v <= 1:
            raise _rule("EXPORT-005", f"export.{info.field_name}={v} is outside [0, 1]")
        return v


# Baselines a relative gate rule may name (components/gate/core.py BASELINES).
GATE_BASELINES = ("base", "champion", "retrieval")


class GateRule(_Section):
    metric: str = Field(
        ...,
        description="metric name the task reports, e.g. exact_match or field_match/[].flow (Config checks it)",
    )
    min: float | None = Field(None, allow_inf_nan=False, description="threshold: pass when metric >= min")
    max: float | None = Field(None, allow_inf_nan=False, description="threshold: pass when metric <= max")
    equals: float | None = Field(
        None, allow_inf_nan=False, description="hard constraint: pass only when metric is exactly this value"
    )
    not_worse_than: str | None = Field(
        None,
        description="relative: base | champion | retrieval; fail when a paired bootstrap CI of the per-example "
        "difference (candidate - baseline) lies wholly below -margin (higher is better)",
    )
    margin: float | None = Field(
        None, allow_inf_nan=False, description="relative: tolerated shortfall (>= 0); null = 0"
    )
    required: bool | None = Field(
        None, description="relative: fail (instead of skip) when the baseline is absent; null = false"
    )

    @model_validator(mode="after")
    def _one_bound(self) -> GateRule:
        bounds = [k for k in ("min", "max", "equals", "not_worse_than") if getattr(self, k) is not None]
        if len(bounds) != 1:
            raise _rule(
                "GATE-001",
                f"rule on {self.metric!r} has {' and '.join(bounds) if bounds else 'no bound'}; "
                "it needs exactly one of min, max, equals, not_worse_than",
            )
        if self.not_worse_than is not None and self.not_worse_than not in GATE_BASELINES:
            raise _rule(
                "GATE-003",
                f"rule on {self.metric!r}: not_worse_than={self.not_worse_than!r} is not one of "
                + ", ".join(GATE_BASELINES),
            )
        for key in ("min", "max", "equals"):
            value = getattr(self, key)
            if value is not None and not 0 <= value <= 1:
                raise _rule("GATE-007", f"rule on {self.metric!r}: {key}={value} is outside [0, 1]")
        if self.margin is not None and self.margin < 0:
            raise _rule("GATE-004", f"rule on {self.metric!r}: margin={self.margin} is negative")
        extra = [k for k in ("margin", "required") if getattr(self, k) is not None]
        if self.not_worse_than is None and extra:
            raise _rule(
                "GATE-005",
                f"rule on {self.metric!r} sets {' and '.join(extra)} but has no not_worse_than baseline",
            )
        return self


class BootstrapConfig(_Section):
    resamples: int = Field(2000, description="paired bootstrap resamples of the eval examples")
    seed: int = Field(0, description="seed of the resampling; same seed + scores = same interval")
    confidence: float = Field(0.95, description="two-sided confidence level of the interval")

    @field_validator("resamples")
    @classmethod
    def _resamples(cls, v: int) -> int:
        if v < 100:
            raise _rule("GATE-006", f"resamples={v} is below 100")
        return v

    @field_validator("confidence")
    @classmethod
    def _confidence(cls, v: float) -> float:
        if not 0 < v < 1:
            raise _rule("GATE-006", f"confidence={v} is outside (0, 1)")
        return v


class GatesConfig(_Section):
    rules: list[GateRule] = Field(default_factory=list, description="all must pass for registration")
    bootstrap: BootstrapConfig = Field(
        default_factory=BootstrapConfig, description="how relative (not_worse_than) rules are decided"
    )


# The vLLM serving container of Vertex AI Model Garden: serves a Hugging Face folder (safetensors +
# tokenizer) with an OpenAI-compatible API; AIP_STORAGE_URI is where Vertex mounts the version's artifacts.
VLLM_SERVING_IMAGE = (
    "us-docker.pkg.dev/vertex-ai/vertex-vision-model-garden-dockers/pytorch-vllm-serve:latest"
)


class RegistryConfig(_Section):
    backend: Literal["mlflow", "vertex"] = Field(
        "mlflow",
        description="mlflow (embedded sqlite or a tracking server) or vertex (Vertex AI Model Registry)",
    )
    tracking_uri: str = Field(
        "",
        description="MLflow tracking URI; empty = sqlite under .slmforge/",
        json_schema_extra=kfp("tracking_uri", "train"),
    )
    model_name: str | None = Field(None, description="registered model name; default: the config name")
    serving_image: str = Field(
        VLLM_SERVING_IMAGE, description="vertex: serving container of uploaded versions (vLLM-style)"
    )
    staging_uri: str = Field(
        "", description="vertex: gs:// prefix the weights are uploaded under; empty = <pipeline_root>/models"
    )


class VertexConfig(_Section):
    project: str = Field("", description="GCP project id")
    region: str = Field("us-central1", description="Vertex AI region")
    pipeline_root: str = Field("", description="gs:// prefix for pipeline artifacts")
    service_account: str = Field(
        "",
        description="service account the pipeline runs as",
        json_schema_extra=kfp("service_account", "train_job"),
    )
    experiment: str = Field("", description="Vertex Experiment the runs are grouped under")
    accelerator_type: str = Field(
        "NVIDIA_L4",
        description="accelerator of the steps that run a model (train, evaluate, export) on Vertex; ignored locally",
        json_schema_extra=kfp(
            "accelerator_type", "gpu", "preflight", "train_job", "export.parity_accelerator_type"
        ),
    )
    accelerator_count: int = Field(
        1,
        description="accelerators per step that runs a model (ignored locally)",
        json_schema_extra=kfp(
            "accelerator_count", "gpu", "preflight", "train_job", "export.parity_accelerator_count"
        ),
    )
    machine_type: str = Field(
        "",
        description="machine type of the train step; empty = the one that carries accelerator_count accelerators",
        json_schema_extra=kfp("machine_type", "preflight", "train_job"),
    )
    network: str = Field(
        "",
        description="VPC network the pipeline's steps are peered with (private services access), as "
        "projects/<project number>/global/networks/<name>; empty = not peered",
        json_schema_extra=kfp("network", "train_job"),
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="labels of the PipelineJob (filtering and billing); submit adds slmforge-git (code SHA) and "
        "slmforge-config (config hash)",
    )

    @model_validator(mode="after")
    def _accelerator(self) -> VertexConfig:
        from components.preflight.prices import ACCELERATORS  # plain data, no ML stack

        if self.accelerator_type not in ACCELERATORS:
            raise _rule(
                "VTX-001", f"vertex.accelerator_type={self.accelerator_type!r} is not a known accelerator"
            )
        if self.accelerator_count < 1:
            raise _rule("VTX-001", f"vertex.accelerator_count={self.accelerator_count} is below 1")
        return self

    @field_validator("network")
    @classmethod
    def _network(cls, v: str) -> str:
        if v and not _NETWORK.fullmatch(v):
            raise _rule("VTX-003", f"vertex.network={v!r} is not projects/<number>/global/networks/<name>")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        # Google Cloud's label rules (ASCII subset): lowercase letters, digits, _ and -, 63 characters.
        bad = [f"key {k!r}" for k in v if not _LABEL_KEY.fullmatch(k) or k.startswith("slmforge-")]
        bad += [f"{k}={val!r}" for k, val in v.items() if not _LABEL_VALUE.fullmatch(val)]
        if bad or len(v) > 62:  # 64 per job, two of them slmforge's own
            raise _rule("VTX-004", ", ".join(bad) or f"{len(v)} labels")
        return v


_NETWORK = re.compile(r"projects/\d+/global/networks/[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")]


class Config(_Section):
    name: Name = Field(..., description="project name: lowercase, digits, dashes")
    task: TaskConfig
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    preflight: PreflightConfig = Field(default_factory=PreflightConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    vertex: VertexConfig = Field(default_factory=VertexConfig)

    @model_validator(mode="after")
    def _lora_only_for_lora(self) -> Config:
        if self.model.method == "full" and "lora" in self.model.model_fields_set:
            raise _rule("MODEL-002", "model.lora is set but model.method is full")
        return self

    @model_validator(mode="after")
    def _vertex_registry_has_a_home(self) -> Config:
        if self.registry.backend == "vertex":
            staging = self.registry.staging_uri or self.vertex.pipeline_root
            if not self.vertex.project or not staging.startswith("gs://"):
                raise _rule(
                    "REG-001",
                    f"registry.backend is vertex but vertex.project={self.vertex.project!r} and the staging "
                    f"location is {staging!r}",
                )
        return self

    @model_validator(mode="after")
    def _decoding_fits_task(self) -> Config:
        if self.eval.decoding != "free" and self.task.type == "generation":
            raise _rule(
                "EVAL-001", f"eval.decoding={self.eval.decoding} but a generation task has no grammar"
            )
        return self

    @model_validator(mode="after")
    def _gate_metrics_known(self) -> Config:
        """Gate rules name metrics the task type reports (GATE-002), each reported at gates.rules.<i>."""
        known = METRICS.get(self.task.type, ())
        errors = [
            {
                "type": _rule(
                    "GATE-002",
                    f"metric {rule.metric!r} is not reported by {self.task.type} tasks; they report "
                    + ", ".join(known)
                    + " (and name/<part> variants)",
                ),
                "loc": ("gates", "rules", i),
                "input": rule.metric,
            }
            for i, rule in enumerate(self.gates.rules)
            if rule.metric.split("/")[0] not in known
        ]
        if errors:  # a ValidationError keeps each error's own location (a plain error would sit at the top)
            raise ValidationError.from_exception_data("Config", errors)
        return self


_PYDANTIC_RULES = {"missing": "CFG-001", "extra_forbidden": "CFG-002"}


def _is_local(locator: str) -> bool:
    return "://" not in locator and not locator.startswith("hf:")


def _resolve_locator(loc: str, base_dir: Path) -> tuple[str, str | None]:
    """A local locator with its path made absolute (format prefix kept), and the problem if it is missing."""
    head, sep, rest = loc.partition(":")
    prefix, path = (head + sep, rest) if sep and head in ("jsonl", "json", "csv", "parquet") else ("", loc)
    if not _is_local(path):
        return loc, None
    resolved = (base_dir / path).resolve()
    return prefix + str(resolved), None if resolved.exists() else f"{resolved} does not exist"


def _prepare(raw: dict[str, Any], base_dir: Path) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Resolve relative paths against the config's folder and read the task schema in."""
    problems: list[tuple[str, str, str]] = []
    data = raw.get("data")
    for key in ("train", "eval"):
        if isinstance(data, dict) and isinstance(data.get(key), str) and data[key].strip():
            data[key], problem = _resolve_locator(data[key].strip(), base_dir)
            if problem:
                problems.append(("DATA-002", f"data.{key}", problem))
    task = raw.get("task")
    if isinstance(task, dict) and isinstance(task.get("schema"), str) and "output_schema" not in task:
        path = (base_dir / task["schema"]).resolve()
        try:
            task["output_schema"] = json.loads(path.read_text(encoding="utf-8"))
            task["schema"] = str(path)
        except (OSError, json.JSONDecodeError) as e:
            problems.append(("TASK-002", "task.schema", f"{path}: {e}"))
    model = raw.get("model")
    if (
        isinstance(model, dict)
        and isinstance(model.get("base"), str)
        and model["base"].startswith((".", "/"))
    ):
        model["base"] = str((base_dir / model["base"]).resolve())
    return raw, problems


def _secrets(raw: Any, path: str = "") -> list[tuple[str, str, str]]:
    """CFG-007 for every string value that looks like a credential (the value masked in the message)."""
    from components.common.secrets import find_secret, mask

    if isinstance(raw, dict):
        return [
            v
            for k, val in raw.items()
            if path + k != "task.output_schema"
            for v in _secrets(val, f"{path}{k}.")
        ]
    if isinstance(raw, list):
        return [v for i, val in enumerate(raw) for v in _secrets(val, f"{path[:-1]}[{i}].")]
    what = find_secret(raw) if isinstance(raw, str) else None
    return [("CFG-007", path[:-1], f"holds a secret-looking value ({what}: {mask(raw)})")] if what else []


def parse_config(raw: Any, base_dir: Path | str = ".") -> Config:
    """Validate a config mapping; raise ``ConfigError`` naming every broken rule."""
    if not isinstance(raw, dict):
        raise ConfigError([("CFG-004", "(top)", f"expected a mapping, got {type(raw).__name__}")])
    raw, problems = _prepare(json.loads(json.dumps(raw)), Path(base_dir))
    problems += _secrets(raw)
    if problems:
        raise ConfigError(problems)
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        violations = []
        for err in e.errors():
            rule = err["type"] if err["type"] in RULES else _PYDANTIC_RULES.get(err["type"], "CFG-003")
            where = ".".join(str(p) for p in err["loc"]) or "(top)"
            violations.append((rule, where, err["msg"]))
        raise ConfigError(violations) from None


def apply_overrides(raw: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """``raw`` with each ``dotted.path=value`` override set (the value read as YAML); the result is
    validated like any config, so an unknown field or a bad value names its rule as usual."""
    import yaml

    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise ConfigError([("CFG-004", "(top)", f"expected a mapping, got {type(raw).__name__}")])
    raw = json.loads(json.dumps(raw))
    for item in overrides:
        path, sep, text = item.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise ConfigError([("CFG-005", item, "expected SECTION.FIELD=VALUE")])
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError([("CFG-005", path, f"the value {text!r} is not YAML: {e}")]) from None
        node = raw
        for depth, key in enumerate(keys[:-1]):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError([("CFG-005", path, f"{where} is a value, not a section")])
        node[keys[-1]] = value
    return raw


def _read_yaml(path: Path) -> Any:
    """The config file as data; refuses what YAML would silently accept: a key given twice in one mapping
    (the last would win), and aliases (a few lines of them expand to gigabytes: an "alias bomb")."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            [("CFG-004", str(path), f"not UTF-8 text (byte {e.start}): save it as UTF-8")]
        ) from None
    except OSError as e:
        raise ConfigError([("CFG-004", str(path), str(e))]) from None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                mark = event.start_mark
                raise ConfigError(
                    [("CFG-004", f"{path}:{mark.line + 1}", "YAML aliases (*name) are not read")]
                )
        return yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError([("CFG-004", str(path), str(e))]) from None


def _unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise ConfigError([("CFG-006", f"line {line}", f"{key!r} appears twice in one mapping")])
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read and validate a YAML config file, with ``overrides`` (``train.max_steps=300``) applied."""
    path = Path(path)
    raw = _read_yaml(path)
    return parse_config(apply_overrides(raw, overrides), path.resolve().parent)


def config_hash(cfg: Config) -> str:
    """sha256 of the validated config in canonical JSON: the identity of a run's settings."""
    blob = json.dumps(cfg.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def registry_spec(cfg: Config) -> dict[str, str]:
    """Where versions are registered (components/register/backends.py ``open_registry`` arguments)."""
    if cfg.registry.backend == "mlflow":
        return {"backend": "mlflow", "tracking_uri": cfg.registry.tracking_uri}
    staging = cfg.registry.staging_uri or (
        f"{cfg.vertex.pipeline_root.rstrip('/')}/models" if cfg.vertex.pipeline_root else ""
    )
    return {
        "backend": "vertex",
        "project": cfg.vertex.project,
        "region": cfg.vertex.region,
        "staging_bucket": staging,
        "serving_image": cfg.registry.serving_image,
    }
