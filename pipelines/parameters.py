"""The pipelines' parameters, derived from the config's declarations.

Every option is declared once, as a field of the config model (components/common/config.py): its name,
type, default, help text and validation rule. A field the pipelines take also says where it goes, with
``json_schema_extra=kfp(PARAM, STEP[.INPUT], ...)``: the name of its pipeline parameter and the step inputs
that receive it. A few parameters combine several fields (the config hash, the registry spec, a fallback
such as ``max_tokens``); they are declared in ``DERIVED`` below, each naming the fields it carries.

From these declarations this module makes, for every compiled pipeline:

* ``pipeline_parameters(cfg)``: a config flattened to the pipeline's parameters (lists of names become
  comma-separated text, structures JSON text), the arguments ``submit`` and ``slmforge run`` pass;
* ``declare(...)``: the pipeline function's signature (explicit, typed parameters, so the Vertex console
  compares runs parameter by parameter) and its docstring, whose Args KFP turns into input descriptions;
* ``step_inputs(step, p)``: the arguments a step takes from the pipeline's parameters, by input name.

tests/compile/test_parameters.py walks the config schema and the compiled YAML: every field reaches the
inputs it declares in every pipeline that runs those steps.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from components.common.config import BootstrapConfig, Config, config_hash, registry_spec

# Steps of the pipelines, by the name of their component without ``_op``. Two names stand for a group of
# steps that score a model the same way (the gate checks they did): ``task`` (the scorer, the held-out
# rows and the prompt) and ``decode`` (generation settings).
GROUPS: dict[str, tuple[str, ...]] = {
    "task": ("evaluate", "evaluate_base", "evaluate_champion", "retrieval_baseline", "export"),
    "decode": ("evaluate", "evaluate_base", "evaluate_champion", "export"),
}
# The steps each compiled pipeline runs. Two routes are not components: ``gpu`` (the accelerators of the
# steps that run a model, set on the tasks) and ``train_job`` (the launcher inputs of the multi-node job).
_SCORING = ("gpu", "evaluate", "evaluate_base", "evaluate_champion", "retrieval_baseline", "gate")
_DATA = ("ingest", "clean", "split", "augment", "preflight")
_FINETUNE = (*_DATA, "train", *_SCORING, "export", "register", "deploy")
PIPELINE_STEPS: dict[str, tuple[str, ...]] = {
    "finetune": _FINETUNE,
    "finetune-multinode": (*_FINETUNE, "train_job"),
    "evaluate": ("ingest", "clean", "split", "fetch_model", *_SCORING),
}
# Where a compiled pipeline runs (`python compile.py --target`): Vertex AI Pipelines, or a Kubeflow
# Pipelines backend on GKE (infra/gke.tf). The kfp target schedules the steps that run a model through the
# Kubernetes platform spec instead (route ``gke``: a GPU limit, the GPU pool's node selector and
# toleration), and has no multi-node pipeline: its train step is a Vertex AI CustomJob.
TARGETS = ("vertex", "kfp")
TARGET_PIPELINES = {"vertex": tuple(PIPELINE_STEPS), "kfp": ("finetune", "evaluate")}
# The GKE GPU pool (infra/gke.tf node_pools.gpu): its label, and its taint, which a GPU step tolerates.
GPU_POOL_LABEL = ("slmforge/pool", "gpu")
GPU_POOL_TAINT = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}


def steps_of(pipeline: str, target: str = "vertex") -> tuple[str, ...]:
    """The steps ``pipeline`` runs when compiled for ``target`` (kfp: ``gke`` in place of ``gpu``)."""
    if pipeline not in TARGET_PIPELINES[target]:
        raise ValueError(f"pipeline {pipeline} is not compiled for the {target} target")
    steps = PIPELINE_STEPS[pipeline]
    return tuple("gke" if s == "gpu" else s for s in steps) if target == "kfp" else steps


def gke_node_selector(accelerator_type: str) -> str:
    """The node selector of a GPU step on GKE, as JSON text: the GPU pool's label and the accelerator as
    GKE names it (``cloud.google.com/gke-accelerator``)."""
    from components.preflight.prices import ACCELERATORS

    key, value = GPU_POOL_LABEL
    gke = ACCELERATORS[accelerator_type].gke_name
    return json.dumps({"cloud.google.com/gke-accelerator": gke, key: value}, sort_keys=True)


# Read by `submit` for the PipelineJob itself, not by any step (pipelines/vertex.py job_request).
SUBMIT_ONLY = ("vertex.project", "vertex.region", "vertex.pipeline_root", "vertex.labels")


@dataclass(frozen=True)
class Parameter:
    name: str
    type: type  # str, int, float or bool: what KFP types a pipeline parameter as
    default: Any  # inspect.Parameter.empty: required
    help: str
    to: tuple[tuple[str, str], ...]  # (step or group, input name)
    fields: tuple[str, ...]  # the config fields it carries
    value: Callable[[Config], Any] | None  # None: a run's parameter, not a config's


def _encode(value: Any, encode: str = "") -> Any:
    if value is None:
        return ""
    if isinstance(value, bool) and encode == "text":  # a choice such as true | false | auto
        return str(value).lower()
    if isinstance(value, dict) or (isinstance(value, list) and encode == "json"):
        return json.dumps(value, sort_keys=isinstance(value, dict))
    if isinstance(value, list):
        return ",".join(value)
    return value


_ENCODING_HELP = {"csv": " (comma-separated)", "json": " (JSON text)"}


def _encoding(default: Any, encode: str) -> str:
    """How a field's value is written as a parameter: csv (a list of names), json, or "" (as it is)."""
    if encode == "json" or isinstance(default, dict):
        return "json"
    return "csv" if isinstance(default, list) else ""


def _kfp_type(annotation: Any) -> type:
    return annotation if annotation in (bool, int, float) else str


def _routes(to: list[str] | tuple[str, ...], param: str) -> tuple[tuple[str, str], ...]:
    return tuple((s.partition(".")[0], s.partition(".")[2] or param) for s in to)


def _get(cfg: BaseModel, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, "output_schema" if part == "schema" else part)
    return cfg


def config_fields(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, FieldInfo)`` of every leaf of the config (sections are walked; gate rules are one leaf)."""
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from config_fields(info.annotation, path + ".")
        else:
            yield path, info


def _declared() -> Iterator[Parameter]:
    for path, info in config_fields():
        route = (
            (info.json_schema_extra or {}).get("kfp") if isinstance(info.json_schema_extra, dict) else None
        )
        if not route:
            continue
        default = (
            inspect.Parameter.empty if info.is_required() else info.get_default(call_default_factory=True)
        )
        kind = _kfp_type(info.annotation)
        encode = route.get("encode", "") or ("text" if kind is str else "")
        yield Parameter(
            name=route["param"],
            type=kind,
            default=default if default is inspect.Parameter.empty else _encode(default, encode),
            help=(info.description or "") + _ENCODING_HELP.get(_encoding(default, encode), ""),
            to=_routes(route["to"], route["param"]),
            fields=(path,),
            value=lambda cfg, path=path, encode=encode: _encode(_get(cfg, path), encode),
        )


def _split_cover(cfg: Config) -> str:
    # A classification task's target is its label: every label must occur in train.
    default = ["completion"] if cfg.task.type == "classification" else None
    return json.dumps(default if cfg.data.split.cover is None else cfg.data.split.cover)


_REGISTRY_FIELDS = (
    "registry.backend",
    "registry.tracking_uri",
    "registry.serving_image",
    "registry.staging_uri",
    "vertex.project",
    "vertex.region",
    "vertex.pipeline_root",
)

DERIVED = (
    Parameter(
        "config_name",
        str,
        inspect.Parameter.empty,
        "project name from the config (used for display).",
        _routes(["gate.title"], ""),
        ("name",),
        lambda c: c.name,
    ),
    Parameter(
        "config_hash",
        str,
        inspect.Parameter.empty,
        "sha256 of the validated config; every artifact records it.",
        _routes(
            ["ingest", "clean", "split", "augment", "preflight", "train", "task", "register", "fetch_model"],
            "config_hash",
        ),
        (),
        config_hash,
    ),
    Parameter(
        "output_schema",
        str,
        inspect.Parameter.empty,
        "the task's JSON Schema, as JSON text.",
        _routes(["ingest", "split", "augment", "task", "deploy", "train"], "output_schema"),
        ("task.schema", "task.output_schema"),
        # declared key order kept: constrained decoding emits properties in this order (not sorted)
        lambda c: json.dumps(c.task.output_schema),
    ),
    Parameter(
        "data_shape",
        str,
        "auto",
        "auto, prompt_completion, alpaca, messages or sharegpt (auto with a field map in the config: "
        "prompt_completion).",
        _routes(["ingest.shape"], ""),
        ("data.shape",),
        lambda c: c.data.effective_shape,
    ),
    Parameter(
        "max_tokens",
        int,
        256,
        "rows whose rendered example has more tokens are rejected; -1 = no limit (config: "
        "data.clean.max_tokens, default train.max_length).",
        _routes(["clean"], "max_tokens"),
        ("data.clean.max_tokens",),
        lambda c: c.train.max_length if c.data.clean.max_tokens is None else c.data.clean.max_tokens,
    ),
    Parameter(
        "split_cover",
        str,
        "null",
        "JSON list of fields whose every value must be in train; null = the schema's enums.",
        _routes(["split.cover"], ""),
        ("data.split.cover",),
        _split_cover,
    ),
    Parameter(
        "gpu_node_selector",
        str,
        gke_node_selector("NVIDIA_L4"),
        "kfp target: the node selector of the steps that run a model, JSON (the GPU pool's label and "
        "vertex.accelerator_type as GKE names it).",
        _routes(["gke.node_selector"], ""),
        ("vertex.accelerator_type",),
        lambda c: gke_node_selector(c.vertex.accelerator_type),
    ),
    Parameter(
        "augment_project",
        str,
        "",
        "the GCP project of a Gemini teacher (vertex.project).",
        _routes(["augment.project"], ""),
        ("vertex.project",),
        lambda c: c.vertex.project,
    ),
    Parameter(
        "augment_location",
        str,
        "us-central1",
        "the Vertex AI location of a Gemini teacher (data.augment.teacher.location, else vertex.region).",
        _routes(["augment.location"], ""),
        ("data.augment.teacher.location", "vertex.region"),
        lambda c: c.data.augment.teacher.location or c.vertex.region,
    ),
    Parameter(
        "experiment",
        str,
        "",
        "MLflow / Vertex experiment of the training runs (train.experiment, "
        "else vertex.experiment, else the config name).",
        _routes(["train"], "experiment"),
        ("train.experiment", "vertex.experiment"),
        lambda c: c.train.experiment or c.vertex.experiment or c.name,
    ),
    Parameter(
        "gate_rules",
        str,
        "[]",
        "JSON list of gate rules.",
        _routes(["gate.rules", "export", "deploy"], "gate_rules"),
        ("gates.rules",),
        lambda c: json.dumps([r.model_dump(exclude_none=True) for r in c.gates.rules]),
    ),
    Parameter(
        "gate_bootstrap",
        str,
        json.dumps(BootstrapConfig().model_dump(), sort_keys=True),
        "paired bootstrap of the not_worse_than rules, JSON {resamples, seed, confidence}.",
        _routes(["gate.bootstrap", "deploy.bootstrap"], ""),
        tuple(f"gates.bootstrap.{f}" for f in BootstrapConfig.model_fields),
        lambda c: json.dumps(c.gates.bootstrap.model_dump(), sort_keys=True),
    ),
    Parameter(
        "registry",
        str,
        '{"backend": "mlflow", "tracking_uri": ""}',
        "JSON {backend: mlflow|vertex, ...}: where the champion is read and candidates registered.",
        _routes(["evaluate_champion", "register", "fetch_model", "deploy"], "registry"),
        _REGISTRY_FIELDS,
        lambda c: json.dumps(registry_spec(c), sort_keys=True),
    ),
    Parameter(
        "model_name",
        str,
        "",
        "registered model name (default: the config name).",
        _routes(["evaluate_champion", "export", "register", "deploy"], "model_name"),
        ("registry.model_name",),
        lambda c: c.registry.model_name or c.name,
    ),
)

# Parameters of a run rather than of a config (``value`` None): `slmforge run --resume` and `submit --model`
# set them; a config's parameters carry their defaults.
RUN_PARAMETERS = {
    "resume_from": Parameter(
        "resume_from",
        str,
        "",
        "checkpoints folder of an earlier run of the same config and data to continue the training from "
        "(`slmforge run --resume RUN` sets it); empty = from step 0.",
        _routes(["train"], "resume_from"),
        (),
        None,
    ),
    "model_uri": Parameter(
        "model_uri",
        str,
        inspect.Parameter.empty,
        "the model to evaluate: models:/NAME/VERSION or models:/NAME@ALIAS (a version of the registry), a gs:// "
        "folder, or a local folder.",
        _routes(["fetch_model"], "model_uri"),
        (),
        None,
    ),
}

PARAMETERS: dict[str, Parameter] = {p.name: p for p in (*_declared(), *DERIVED)}


def _steps(route: str) -> tuple[str, ...]:
    return GROUPS.get(route, (route,))


def parameters_of(pipeline: str, target: str = "vertex") -> list[Parameter]:
    """The parameters of ``pipeline`` compiled for ``target`` (those a step of it takes), required ones
    first, then by name."""
    steps = set(steps_of(pipeline, target))
    every = (*PARAMETERS.values(), *RUN_PARAMETERS.values())
    chosen = [p for p in every if any(s in steps for r, _ in p.to for s in _steps(r))]
    return sorted(chosen, key=lambda p: (p.default is not inspect.Parameter.empty, p.name))


def pipeline_parameters(cfg: Config, pipeline: str = "finetune", target: str = "vertex") -> dict[str, Any]:
    """A config flattened into the parameters of ``pipeline`` compiled for ``target``, with the defaults of
    the run's own parameters (a required one, such as ``model_uri``, is the caller's)."""
    return {
        p.name: p.value(cfg) if p.value else p.default
        for p in parameters_of(pipeline, target)
        if p.value or p.default is not inspect.Parameter.empty
    }


def step_inputs(step: str, p: dict[str, Any]) -> dict[str, Any]:
    """The inputs ``step`` takes from the pipeline parameters ``p`` (by the step's input names); a group
    name (``task``, ``decode``) gives the inputs every step of the group shares."""
    return {
        name: p[param.name]
        for param in (*PARAMETERS.values(), *RUN_PARAMETERS.values())
        for route, name in param.to
        if route == step and param.name in p
    }


def declare(
    body: Callable[[dict], Any],
    *,
    pipeline: str,
    summary: str,
    returns: dict[str, str],
    return_type: Any = inspect.Signature.empty,
    target: str = "vertex",
) -> Callable:
    """A pipeline function for ``dsl.pipeline``: the typed parameters of ``pipeline`` as its signature, their
    help as its docstring (KFP turns both into the compiled inputs and their descriptions), and a body
    ``body(p)`` that gets them as a dict by name."""
    params = parameters_of(pipeline, target)
    names = [p.name for p in params]

    def func(*args, **kwargs):  # KFP calls it positionally, kfp.local by keyword
        return body({**dict(zip(names, args, strict=False)), **kwargs})

    func.__signature__ = inspect.Signature(
        [
            inspect.Parameter(
                p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default, annotation=p.type
            )
            for p in params
        ],
        return_annotation=return_type,
    )
    lines = [summary, "", "Args:"]
    lines += [f"    {p.name}: {' '.join(p.help.split())}" for p in params]
    lines += ["", "Returns:", *(f"    {name}: {text}" for name, text in returns.items())]
    func.__doc__ = "\n".join(lines) + "\n"
    func.__name__ = func.__qualname__ = pipeline.replace("-", "_")
    return func


def stage_options(options: type, step: str, cfg: Config, **overrides: Any):
    """A stage's Options built from ``cfg`` exactly as its component builds them in a pipeline run: the
    config flattened, routed to ``step``'s inputs, and decoded by ``options.from_inputs``
    (components/common/options.py). The CLI and the benchmarks run stages in-process this way, so they
    cannot drift from the pipeline."""
    inputs = {**step_inputs(step, pipeline_parameters(cfg)), **overrides}
    names = options.input_names()
    return options.from_inputs(**{k: v for k, v in inputs.items() if k in names})
