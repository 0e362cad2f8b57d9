"""The config's rule machinery: the rule table (every rule ID with what it says and how to fix it), the
error that lists broken rules, the validation error a field raises with its rule ID, the base of every
config section, and ``kfp``, the helper a field uses to declare its route into the pipelines.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

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
    "DATA-003": (
        "split fraction out of range",
        "use data.split.eval_fraction in (0, 0.5] and data.split.validation_fraction in [0, 0.5]",
    ),
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
    "TRAIN-001": (
        "non-positive training setting",
        "use a positive number (train.eval_steps: 0 or more)",
    ),
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
        "use a transformers SchedulerType name (LR_SCHEDULERS in components/common/config_train.py), e.g. cosine",
    ),
    "TRAIN-005": (
        "best-checkpoint selection and early stopping watch the validation slice",
        (
            "set data.split.validation_fraction > 0 and train.eval_steps > 0, or use train.select: last and "
            "train.early_stopping_patience: 0"
        ),
    ),
    "TRAIN-006": (
        "train.select_metric is not measured during training",
        (
            "use eval_loss, or eval_<metric> for a metric the task reports as one number (with "
            "train.task_eval_rows > 0)"
        ),
    ),
    "TRAIN-004": (
        "value out of range",
        "warmup_ratio and weight_decay in [0, 1); max_steps <= 10,000,000, batch_size <= 65,536, max_length <= 1,048,576",
    ),
    "MODEL-004": ("LoRA setting out of range", "use r >= 1, alpha > 0 and 0 <= dropout < 1"),
    "EVAL-002": (
        "evaluation size out of range",
        "use max_new_tokens in 1..65,536, batch_size >= 0 (0 = planned), and max_examples -1 (all) or >= 1",
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
    "AUG-001": (
        "augment setting out of range",
        (
            "n in 1..100, max_workers in 1..64, max_usd -1 (no cap) or >= 0, max_output_tokens and timeout_s > 0, "
            "retries and temperature >= 0"
        ),
    ),
    "AUG-002": (
        "key_env is not an environment variable name",
        (
            "name the variable that holds the key (e.g. OPENAI_API_KEY) and set it in the environment; never put "
            "the key in the config"
        ),
    ),
    "AUG-003": ("malformed oracle", "write it as module:function, e.g. mypackage.labels:label_row"),
    "AUG-004": (
        "prompt_template without {message}",
        "put {message} where the user message goes ({n}: how many; {format}: the answer format)",
    ),
    "AUG-005": (
        "an OpenAI-compatible teacher needs its endpoint",
        "set data.augment.teacher.endpoint to the server's base URL, e.g. http://localhost:8000",
    ),
    "DEPLOY-001": (
        "deploy setting out of range",
        (
            "canary_percent 1..100, an accelerator of components/preflight/prices.py with a count >= 1, "
            "1 <= min_replicas <= max_replicas, gold_rows >= 1, timeout_s > 0, parity_tolerance and "
            "drift_margin in [0, 1]"
        ),
    ),
    "DEPLOY-002": (
        "the pipeline's deploy step deploys to Vertex AI and records the deployment in Cloud Storage",
        (
            "with deploy.after_register: true set deploy.target: vertex, registry.backend: vertex and "
            "deploy.state: gs://<bucket>/deployments (a step's container cannot keep a local server or "
            "folder); for a local target run `slmforge serve` and `slmforge deploy` after the run"
        ),
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


def rule_error(rule: str, msg: str) -> PydanticCustomError:
    """A validation error carrying rule ID ``rule`` (pydantic reports it as the error type)."""
    # the message goes in as context: braces in it ('^{1,62}$') are text, not format fields
    return PydanticCustomError(rule, "{msg}", {"msg": msg})


def kfp(param: str, *to: str, encode: str = "") -> dict[str, Any]:
    """A config field's route into the pipelines, as its ``json_schema_extra`` (pipelines/parameters.py
    reads it): pipeline parameter ``param``, received by each ``STEP`` (as an input named ``param``) or
    ``STEP.INPUT``; ``encode="json"`` for a list that stays a JSON list (a list of names is otherwise
    comma-separated text)."""
    return {"kfp": {"param": param, "to": list(to), **({"encode": encode} if encode else {})}}


def share(name: str, v: float) -> float:
    """A share of rows: a number in [0, 1] (rule DATA-005)."""
    if not 0 <= v <= 1:
        raise rule_error("DATA-005", f"{name}={v} is outside [0, 1]")
    return v


class Section(BaseModel):
    # NaN and infinity are never a setting; a YAML true/false is never a number (max_steps: true is not 1)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, f in cls.model_fields.items():
                value = data.get(f.alias or name, data.get(name))
                if isinstance(value, bool) and f.annotation in (int, float, int | None, float | None):
                    raise rule_error("CFG-003", f"{name}={value} is a boolean; give a number")
        return data
