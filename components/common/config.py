"""The one project config file: a pydantic model per section, every rule with an ID.

A config is loaded once (``load_config``) on the user's machine, validated, made self-contained
(relative paths resolved against the config file, the task's JSON Schema read in) and then
flattened (pipelines/parameters.py) into the explicit pipeline parameters that KFP compiles and the
Vertex console compares run by run. Components never read this file: they get parameters.

Each option is declared here once: name, type, default, help (``description``) and validation. A field the
pipelines take also names its pipeline parameter and the step inputs it reaches (``json_schema_extra=kfp(...)``),
from which the pipelines' signatures, docstrings and wiring are derived.

Every validation error names a rule ID (``TASK-002``), the field path and the fix. The rule table is
``RULES`` in config_rules.py; the task and data sections are in config_data.py, loading a file in
config_load.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from components.common.config_data import DataConfig, TaskConfig
from components.common.config_rules import Section, kfp, rule_error
from components.common.config_train import (
    MAX_NEW_TOKENS,
    ModelConfig,
    PreflightConfig,
    TrainConfig,
)
from components.common.task import METRICS, validation_metrics


class EvalConfig(Section):
    decoding: Literal["free", "constrained", "both"] = Field(
        "free",
        description="free; constrained (output held to the schema or the label set; structured and "
        "classification tasks); both (constrained is primary, free reported beside it)",
        json_schema_extra=kfp("eval_decoding", "decode.decoding", "deploy.decoding", "train.decoding"),
    )
    max_new_tokens: int = Field(
        128,
        description="generation budget per example, in tokens",
        json_schema_extra=kfp(
            "eval_max_new_tokens",
            "decode.max_new_tokens",
            "preflight.max_new_tokens",
            "deploy.max_new_tokens",
            "train.max_new_tokens",
        ),
    )
    batch_size: int = Field(
        0,
        description="prompts generated together; 0 = planned: on a GPU the largest batch whose KV cache and "
        "logits fit in half the free memory, on CPU 64",
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
            raise rule_error(
                "EVAL-002", f"eval.max_new_tokens={self.max_new_tokens} is outside 1..{MAX_NEW_TOKENS:,}"
            )
        if self.batch_size < 0:
            raise rule_error("EVAL-002", f"eval.batch_size={self.batch_size} is below 0")
        if self.max_examples == 0 or self.max_examples < -1:
            raise rule_error(
                "EVAL-002", f"eval.max_examples={self.max_examples}: use -1 (all) or a count >= 1"
            )
        return self


class ExportConfig(Section):
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
            raise rule_error("EXPORT-005", f"export.{info.field_name}={v} is outside [0, 1]")
        return v


# Baselines a relative gate rule may name (components/gate/core.py BASELINES).
GATE_BASELINES = ("base", "champion", "retrieval")


class GateRule(Section):
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
            raise rule_error(
                "GATE-001",
                f"rule on {self.metric!r} has {' and '.join(bounds) if bounds else 'no bound'}; "
                "it needs exactly one of min, max, equals, not_worse_than",
            )
        if self.not_worse_than is not None and self.not_worse_than not in GATE_BASELINES:
            raise rule_error(
                "GATE-003",
                f"rule on {self.metric!r}: not_worse_than={self.not_worse_than!r} is not one of "
                + ", ".join(GATE_BASELINES),
            )
        for key in ("min", "max", "equals"):
            value = getattr(self, key)
            if value is not None and not 0 <= value <= 1:
                raise rule_error("GATE-007", f"rule on {self.metric!r}: {key}={value} is outside [0, 1]")
        if self.margin is not None and self.margin < 0:
            raise rule_error("GATE-004", f"rule on {self.metric!r}: margin={self.margin} is negative")
        extra = [k for k in ("margin", "required") if getattr(self, k) is not None]
        if self.not_worse_than is None and extra:
            raise rule_error(
                "GATE-005",
                f"rule on {self.metric!r} sets {' and '.join(extra)} but has no not_worse_than baseline",
            )
        return self


class BootstrapConfig(Section):
    resamples: int = Field(2000, description="paired bootstrap resamples of the eval examples")
    seed: int = Field(0, description="seed of the resampling; same seed + scores = same interval")
    confidence: float = Field(0.95, description="two-sided confidence level of the interval")

    @field_validator("resamples")
    @classmethod
    def _resamples(cls, v: int) -> int:
        if v < 100:
            raise rule_error("GATE-006", f"resamples={v} is below 100")
        return v

    @field_validator("confidence")
    @classmethod
    def _confidence(cls, v: float) -> float:
        if not 0 < v < 1:
            raise rule_error("GATE-006", f"confidence={v} is outside (0, 1)")
        return v


class GatesConfig(Section):
    rules: list[GateRule] = Field(default_factory=list, description="all must pass for registration")
    bootstrap: BootstrapConfig = Field(
        default_factory=BootstrapConfig, description="how relative (not_worse_than) rules are decided"
    )


# The vLLM serving container of Vertex AI Model Garden: serves a Hugging Face folder (safetensors +
# tokenizer) with an OpenAI-compatible API; AIP_STORAGE_URI is where Vertex mounts the version's artifacts.
VLLM_SERVING_IMAGE = (
    "us-docker.pkg.dev/vertex-ai/vertex-vision-model-garden-dockers/pytorch-vllm-serve:latest"
)


class RegistryConfig(Section):
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


class DeployConfig(Section):
    """Read by `slmforge deploy` and `slmforge drift-check` (components/deploy), and by the finetune
    pipeline's deploy step when ``after_register`` is on."""

    after_register: bool = Field(
        False,
        description="finetune: deploy the registered version right after register (target vertex; a "
        "canary with a smoke check, like `slmforge deploy`)",
        json_schema_extra=kfp("deploy_after_register", "deploy.after_register"),
    )
    target: Literal["vertex", "local"] = Field(
        "vertex",
        description="vertex: a Vertex AI endpoint (the version must be in the Vertex registry); local: a "
        "running `slmforge serve` (deploy.endpoint is its URL)",
        json_schema_extra=kfp("deploy_target", "deploy.target"),
    )
    endpoint: str = Field(
        "",
        description="vertex: the endpoint's display name (created when missing; default: the model name); "
        "local: the server's URL (default http://127.0.0.1:8000)",
        json_schema_extra=kfp("deploy_endpoint", "deploy.endpoint"),
    )
    accelerator_type: str = Field(
        "NVIDIA_L4",
        description="vertex: the serving GPU (one of preflight's)",
        json_schema_extra=kfp("deploy_accelerator_type", "deploy.accelerator_type"),
    )
    accelerator_count: int = Field(
        1,
        description="vertex: GPUs per replica",
        json_schema_extra=kfp("deploy_accelerator_count", "deploy.accelerator_count"),
    )
    service_account: str = Field(
        "",
        description="vertex: the identity the deployed model runs as (terraform output "
        "serving_service_account); empty = Vertex's default",
        json_schema_extra=kfp("deploy_service_account", "deploy.service_account"),
    )
    min_replicas: int = Field(
        1,
        description="vertex: replicas kept up (each billed per hour)",
        json_schema_extra=kfp("deploy_min_replicas", "deploy.min_replicas"),
    )
    max_replicas: int = Field(
        1,
        description="vertex: replicas autoscaling may add",
        json_schema_extra=kfp("deploy_max_replicas", "deploy.max_replicas"),
    )
    canary_percent: int = Field(
        10,
        description="share of traffic the new version gets next to the one serving now (100 = all)",
        json_schema_extra=kfp("deploy_canary_percent", "deploy.canary_percent"),
    )
    gold_rows: int = Field(
        64,
        description="rows of the version's own eval predictions kept as the gold set (seeded sample)",
        json_schema_extra=kfp("deploy_gold_rows", "deploy.gold_rows"),
    )
    parity_tolerance: float = Field(
        0.0,
        description="share of gold rows whose served answer may differ from the offline prediction",
        json_schema_extra=kfp("deploy_parity_tolerance", "deploy.parity_tolerance"),
    )
    drift_margin: float = Field(
        0.02,
        description="drift when the bootstrap CI of (now - at deploy) lies wholly below -margin, per metric",
        json_schema_extra=kfp("deploy_drift_margin", "deploy.drift_margin"),
    )
    timeout_s: float = Field(
        60.0,
        description="seconds per request to the endpoint",
        json_schema_extra=kfp("deploy_timeout_s", "deploy.timeout_s"),
    )
    state: str = Field(
        "",
        description="where deployments are recorded (gold set, metrics, history): a folder or a gs:// prefix; "
        "empty = $SLMFORGE_HOME/deployments",
        json_schema_extra=kfp("deploy_state", "deploy.state"),
    )

    @model_validator(mode="after")
    def _in_range(self) -> DeployConfig:
        from components.preflight.prices import ACCELERATORS

        problems = []
        if not 1 <= self.canary_percent <= 100:
            problems.append(f"canary_percent={self.canary_percent} is outside 1..100")
        if self.accelerator_type not in ACCELERATORS or self.accelerator_count < 1:
            problems.append(f"accelerator {self.accelerator_type} x {self.accelerator_count}")
        if not 1 <= self.min_replicas <= self.max_replicas:
            problems.append(f"replicas min {self.min_replicas}, max {self.max_replicas}")
        if self.gold_rows < 1 or self.timeout_s <= 0:
            problems.append(f"gold_rows={self.gold_rows}, timeout_s={self.timeout_s}")
        if not 0 <= self.parity_tolerance <= 1 or not 0 <= self.drift_margin <= 1:
            problems.append(f"parity_tolerance={self.parity_tolerance}, drift_margin={self.drift_margin}")
        if problems:
            raise rule_error("DEPLOY-001", "; ".join(problems))
        return self


class VertexConfig(Section):
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
            "accelerator_count", "gpu", "gke", "preflight", "train_job", "export.parity_accelerator_count"
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
            raise rule_error(
                "VTX-001", f"vertex.accelerator_type={self.accelerator_type!r} is not a known accelerator"
            )
        if self.accelerator_count < 1:
            raise rule_error("VTX-001", f"vertex.accelerator_count={self.accelerator_count} is below 1")
        return self

    @field_validator("network")
    @classmethod
    def _network(cls, v: str) -> str:
        if v and not _NETWORK.fullmatch(v):
            raise rule_error(
                "VTX-003", f"vertex.network={v!r} is not projects/<number>/global/networks/<name>"
            )
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        # Google Cloud's label rules (ASCII subset): lowercase letters, digits, _ and -, 63 characters.
        bad = [f"key {k!r}" for k in v if not _LABEL_KEY.fullmatch(k) or k.startswith("slmforge-")]
        bad += [f"{k}={val!r}" for k, val in v.items() if not _LABEL_VALUE.fullmatch(val)]
        if bad or len(v) > 62:  # 64 per job, two of them slmforge's own
            raise rule_error("VTX-004", ", ".join(bad) or f"{len(v)} labels")
        return v


_NETWORK = re.compile(r"projects/\d+/global/networks/[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")]


class Config(Section):
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
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    vertex: VertexConfig = Field(default_factory=VertexConfig)

    @model_validator(mode="after")
    def _lora_only_for_lora(self) -> Config:
        if self.model.method == "full" and "lora" in self.model.model_fields_set:
            raise rule_error("MODEL-002", "model.lora is set but model.method is full")
        return self

    @model_validator(mode="after")
    def _vertex_registry_has_a_home(self) -> Config:
        if self.registry.backend == "vertex":
            staging = self.registry.staging_uri or self.vertex.pipeline_root
            if not self.vertex.project or not staging.startswith("gs://"):
                raise rule_error(
                    "REG-001",
                    f"registry.backend is vertex but vertex.project={self.vertex.project!r} and the staging "
                    f"location is {staging!r}",
                )
        return self

    @model_validator(mode="after")
    def _pipeline_deploys_to_vertex(self) -> Config:
        d = self.deploy
        if d.after_register and (
            d.target != "vertex" or self.registry.backend != "vertex" or not d.state.startswith("gs://")
        ):
            raise rule_error(
                "DEPLOY-002",
                f"deploy.after_register is on with deploy.target={d.target}, registry.backend="
                f"{self.registry.backend}, deploy.state={d.state!r}",
            )
        return self

    @model_validator(mode="after")
    def _selection_has_a_validation_slice(self) -> Config:
        t = self.train
        watching = t.select == "best" or t.early_stopping_patience > 0
        if watching and (self.data.split.validation_fraction <= 0 or t.eval_steps <= 0):
            raise rule_error(
                "TRAIN-005",
                f"train.select={t.select}, train.early_stopping_patience={t.early_stopping_patience} but "
                f"data.split.validation_fraction={self.data.split.validation_fraction}, "
                f"train.eval_steps={t.eval_steps}",
            )
        if t.select_metric not in validation_metrics(self.task.type if t.task_eval_rows else ""):
            raise rule_error(
                "TRAIN-006",
                f"train.select_metric={t.select_metric!r}, train.task_eval_rows={t.task_eval_rows}; a "
                f"{self.task.type} task measures " + ", ".join(validation_metrics(self.task.type)),
            )
        return self

    @model_validator(mode="after")
    def _decoding_fits_task(self) -> Config:
        if self.eval.decoding != "free" and self.task.type == "generation":
            raise rule_error(
                "EVAL-001", f"eval.decoding={self.eval.decoding} but a generation task has no grammar"
            )
        return self

    @model_validator(mode="after")
    def _gate_metrics_known(self) -> Config:
        """Gate rules name metrics the task type reports (GATE-002), each reported at gates.rules.<i>."""
        known = METRICS.get(self.task.type, ())
        errors = [
            {
                "type": rule_error(
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


def config_hash(cfg: Config) -> str:
    """sha256 of the validated config in canonical JSON: the identity of a run's settings."""
    blob = json.dumps(cfg.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def registry_spec(cfg: Config) -> dict[str, str]:
    """Where versions are registered (components/register/registries.py ``open_registry`` arguments)."""
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
