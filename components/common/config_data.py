"""Config sections of the task and its data: the task (type, labels, schema, system prompt) and
``data`` (sources, column map, repairs, cleaning, split). Part of the config model in config.py.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from components.common.config_rules import Section, kfp, rule_error, share


class TaskConfig(Section):
    type: Literal["structured", "classification", "generation"] = Field(
        "structured",
        description="structured: JSON output checked by a schema; classification: one label of task.labels; "
        "generation: free text",
        json_schema_extra=kfp("task_type", "task", "gate", "augment", "deploy", "train"),
    )
    labels: list[str] = Field(
        default_factory=list,
        description="the label set of a classification task",
        json_schema_extra=kfp("labels", "ingest", "task", "augment", "deploy", "train", encode="json"),
    )
    system_prompt: str = Field(
        "",
        description="system message put before every prompt, in training and eval",
        json_schema_extra=kfp("system_prompt", "clean", "preflight", "train", "task", "augment", "deploy"),
    )
    schema_path: str | None = Field(None, alias="schema", description="JSON Schema file of the output")
    output_schema: dict[str, Any] | None = Field(
        None, description="the schema itself; filled from task.schema at load time"
    )
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _needs_schema(self) -> TaskConfig:
        if self.type == "structured" and self.output_schema is None:
            raise rule_error("TASK-001", "task.type is structured but no schema was given")
        if self.type == "classification" and len(set(self.labels)) < 2:
            raise rule_error("TASK-003", f"task.type is classification but task.labels is {self.labels}")
        if self.type != "classification" and self.labels:
            raise rule_error("TASK-003", f"task.labels is set but task.type is {self.type}")
        if self.output_schema is not None:
            import jsonschema

            try:  # a broken schema is refused here, not by preflight's or ingest's traceback
                jsonschema.validators.validator_for(self.output_schema).check_schema(self.output_schema)
            except jsonschema.SchemaError as e:
                where = "/".join(str(p) for p in e.absolute_path) or "(root)"
                raise rule_error("TASK-002", f"the JSON Schema is invalid at {where}: {e.message}") from None
        return self


class SplitConfig(Section):
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
    validation_fraction: float = Field(
        0.05,
        description="share of the training rows (whole groups, label coverage kept in train) set aside as the "
        "validation slice that training watches (validation loss); never taken from the eval rows; 0 = none",
        json_schema_extra=kfp("validation_fraction", "split"),
    )

    @field_validator("eval_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0 < v <= 0.5:
            raise rule_error("DATA-003", f"eval_fraction={v} is outside (0, 0.5]")
        return v

    @field_validator("validation_fraction")
    @classmethod
    def _validation_fraction(cls, v: float) -> float:
        if not 0 <= v <= 0.5:
            raise rule_error("DATA-003", f"validation_fraction={v} is outside [0, 0.5]")
        return v


class FieldMap(Section):
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


class CleanConfig(Section):
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
        json_schema_extra=kfp("near_dup_threshold", "clean", "augment"),
    )
    max_tokens: int | None = Field(
        None,
        description="tokens per rendered example; longer rows are rejected. null = train.max_length, -1 = off",
    )

    @field_validator("near_dup_threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        if v != -1 and not 0 < v < 1:  # 1.0 would be exact duplicates, which are always removed
            raise rule_error("DATA-005", f"near_dup_threshold={v} is outside (0, 1) and not -1")
        return v


SHAPES = ("auto", "prompt_completion", "alpaca", "messages", "sharegpt")


class LabelsConfig(Section):
    normalize: list[Literal["strip", "lower"]] = Field(
        default_factory=list,
        description="classification targets: strip = trim surrounding whitespace, lower = match task.labels "
        "ignoring case; a target then takes the declared spelling. Labels still unknown are LABEL_UNKNOWN",
        json_schema_extra=kfp("label_normalize", "ingest"),
    )


class ChatConfig(Section):
    fix: list[Literal["drop_leading_assistant", "drop_trailing_user"]] = Field(
        default_factory=list,
        description="repairs for chat exports, counted in the ingest report: drop an assistant turn that opens "
        "a conversation, and a user turn that ends one unanswered (else such rows are BAD_ROLE_ORDER)",
        json_schema_extra=kfp("chat_fixes", "ingest"),
    )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ORACLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class TeacherConfig(Section):
    backend: Literal["gemini", "openai", "hf"] = Field(
        "gemini",
        description="gemini: Gemini on Vertex AI (credentials from the environment / Workload Identity); "
        "openai: any OpenAI-compatible /v1/chat/completions server (OpenAI, vLLM); hf: a local Hugging Face "
        "model",
        json_schema_extra=kfp("augment_teacher", "augment.teacher"),
    )
    model: str = Field(
        "gemini-2.5-flash",
        description="the teacher model: a Gemini model name, the served model's name, or (hf) a model "
        "locator as model.base takes it",
        json_schema_extra=kfp("augment_model", "augment.model"),
    )
    endpoint: str = Field(
        "",
        description="openai: the server's base URL without /v1 (e.g. http://vllm:8000); gemini: an API "
        "endpoint instead of Google's regional one; hf: unused",
        json_schema_extra=kfp("augment_endpoint", "augment.endpoint"),
    )
    key_env: str = Field(
        "",
        description="openai: the name of the environment variable that holds the API key (never the key "
        "itself); empty = no key",
        json_schema_extra=kfp("augment_key_env", "augment.key_env"),
    )
    location: str = Field(
        "", description="gemini: the Vertex AI location of the model (e.g. global); empty = vertex.region"
    )
    temperature: float = Field(
        0.7,
        description="sampling temperature of the paraphrases (a teacher that re-labels uses 0)",
        json_schema_extra=kfp("augment_temperature", "augment.temperature"),
    )
    max_output_tokens: int = Field(
        1024,
        description="the most tokens one reply may hold; a budget reserves this much output per call",
        json_schema_extra=kfp("augment_max_output_tokens", "augment.max_output_tokens"),
    )
    timeout_s: float = Field(
        60.0,
        description="seconds one teacher call may take before it is retried",
        json_schema_extra=kfp("augment_timeout_s", "augment.timeout_s"),
    )
    retries: int = Field(
        4,
        description="retries of a call that timed out or got 408/429/5xx, with exponential backoff",
        json_schema_extra=kfp("augment_retries", "augment.retries"),
    )

    @field_validator("key_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if v and not _ENV_NAME.fullmatch(v):
            raise rule_error("AUG-002", f"key_env={v[:4]}... is not an environment variable name")
        return v

    @field_validator("max_output_tokens", "retries", "timeout_s", "temperature")
    @classmethod
    def _non_negative(cls, v: float, info) -> float:
        if v < 0 or (v == 0 and info.field_name in ("max_output_tokens", "timeout_s")):
            raise rule_error("AUG-001", f"{info.field_name}={v}")
        return v


class AugmentConfig(Section):
    enabled: bool = Field(
        False,
        description="add teacher paraphrases of the training rows (after the split: eval rows are never "
        "paraphrased, and paraphrases near eval prompts are dropped)",
        json_schema_extra=kfp("augment", "augment.enabled"),
    )
    n: int = Field(
        10,
        description="paraphrases asked for per user turn",
        json_schema_extra=kfp("augment_n", "augment.n"),
    )
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    oracle: str = Field(
        "",
        description="module:function that labels a row (row dict -> its label); a paraphrase is kept only "
        "when its label equals the original's. Empty = the teacher re-labels each paraphrase",
        json_schema_extra=kfp("augment_oracle", "augment.oracle"),
    )
    prompt_template: str = Field(
        "",
        description="the request for paraphrases, with {n}, {message} and {format}; empty = the default "
        "(components/augment/core.py DEFAULT_TEMPLATE)",
        json_schema_extra=kfp("augment_prompt_template", "augment.prompt_template"),
    )
    max_usd: float = Field(
        -1.0,
        description="stop asking before the teacher's cost would pass this many dollars; -1 = no cap",
        json_schema_extra=kfp("augment_max_usd", "augment.max_usd"),
    )
    max_workers: int = Field(
        4,
        description="teacher calls in flight at once",
        json_schema_extra=kfp("augment_max_workers", "augment.max_workers"),
    )
    cache: str = Field(
        "",
        description="sqlite file of answered teacher calls, so a rerun asks nothing twice; empty = "
        "$SLMFORGE_HOME/augment/cache.sqlite",
        json_schema_extra=kfp("augment_cache", "augment.cache"),
    )

    @field_validator("n", "max_workers")
    @classmethod
    def _count(cls, v: int, info) -> int:
        if not 1 <= v <= (100 if info.field_name == "n" else 64):
            raise rule_error("AUG-001", f"{info.field_name}={v}")
        return v

    @field_validator("max_usd")
    @classmethod
    def _budget(cls, v: float) -> float:
        if v != -1 and v < 0:
            raise rule_error("AUG-001", f"max_usd={v}")
        return v

    @field_validator("oracle")
    @classmethod
    def _oracle(cls, v: str) -> str:
        if v and not _ORACLE.fullmatch(v):
            raise rule_error("AUG-003", f"oracle={v!r} is not module:function")
        return v

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if v and "{message}" not in v:
            raise rule_error("AUG-004", "prompt_template has no {message} placeholder")
        return v

    @model_validator(mode="after")
    def _endpoint(self) -> AugmentConfig:
        if self.enabled and self.teacher.backend == "openai" and not self.teacher.endpoint:
            raise rule_error("AUG-005", "teacher.backend is openai but teacher.endpoint is empty")
        return self


class DataConfig(Section):
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
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @field_validator("train", "eval")
    @classmethod
    def _locator(cls, v: str, info) -> str:
        if info.field_name == "train" and not v.strip():
            raise rule_error("DATA-001", "data.train is empty")
        if v.strip():
            from components.ingest.sources import LocatorError, parse_locator

            try:
                parse_locator(v)
            except LocatorError as e:
                raise rule_error("DATA-004", str(e)) from None
        return v

    @field_validator("max_reject_rate")
    @classmethod
    def _rate(cls, v: float) -> float:
        return share("max_reject_rate", v)

    @field_validator("max_row_bytes")
    @classmethod
    def _row_bytes(cls, v: int) -> int:
        if v < 1:
            raise rule_error("DATA-006", f"max_row_bytes={v}")
        return v

    @property
    def effective_shape(self) -> str:
        """auto, unless data.fields names the prompt/completion columns (a field map in the config)."""
        if self.shape == "auto" and {"prompt", "completion"} & self.fields.model_fields_set:
            return "prompt_completion"
        return self.shape
