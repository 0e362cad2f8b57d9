"""Every config field reaches its consumers in every compiled pipeline (pipelines/parameters.py).

The config schema declares each option once, with its route into the pipelines; these tests walk the schema
and the compiled YAML of finetune, finetune-multinode and evaluate. A field that reaches no step, a step
input the wiring forgot, or a compiled parameter no step reads fails here. The multi-node CustomJob once ran
with no service account and outside the VPC (vertex.service_account / vertex.network reached no step) and
preflight.sample_rows reached the CLI only: both are consumers these tests now check.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from components.common.config_load import load_config
from pipelines.parameters import (
    DERIVED,
    GROUPS,
    PARAMETERS,
    RUN_PARAMETERS,
    SUBMIT_ONLY,
    TARGET_PIPELINES,
    config_fields,
    parameters_of,
    pipeline_parameters,
    steps_of,
)

_SCORERS = {"evaluate-op", "evaluate-base-op", "evaluate-champion-op"}
GPU_TASKS = {
    "finetune": {*_SCORERS, "train-op", "export-op"},
    "finetune-multinode": {*_SCORERS, "export-op"},  # the custom job takes its accelerators as inputs
    "evaluate": _SCORERS,
}
DEMO = Path(__file__).resolve().parents[2] / "examples" / "travel" / "config.yaml"
# every compiled template: (target, pipeline)
CASES = [(target, pipeline) for target, pipelines in TARGET_PIPELINES.items() for pipeline in pipelines]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[tuple[str, str], list[dict]]:
    """(target, pipeline) -> the compiled YAML documents: the pipeline spec, then (kfp) the platform spec."""
    from pipelines.compiler import compile_all

    out = {}
    for target in TARGET_PIPELINES:
        for p in compile_all(tmp_path_factory.mktemp(target), target=target):
            out[(target, p.stem)] = list(yaml.safe_load_all(p.read_text()))
    return out


def _tasks(spec: dict) -> dict[str, dict]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def _fed_by(task: dict, name: str) -> str:
    """The pipeline parameter that feeds input ``name`` of ``task`` ("" when none does)."""
    source = task.get("inputs", {}).get("parameters", {}).get(name, {}).get("componentInputParameter", "")
    return source.removeprefix("pipelinechannel--")


def test_every_config_field_has_a_route():
    carried = {f for p in DERIVED for f in p.fields} | {f for p in PARAMETERS.values() for f in p.fields}
    missing = [path for path, _ in config_fields() if path not in carried and path not in SUBMIT_ONLY]
    assert not missing, (
        f"config fields that reach no pipeline: {missing}. Declare their route with json_schema_extra=kfp(...) "
        "in components/common/config.py, carry them in a DERIVED parameter, or list them in SUBMIT_ONLY"
    )


def test_every_route_names_a_step_of_some_pipeline():
    steps = {s for t, ps in TARGET_PIPELINES.items() for p in ps for s in steps_of(p, t)} | set(GROUPS)
    for param in (*PARAMETERS.values(), *RUN_PARAMETERS.values()):
        for route, name in param.to:
            assert route in steps and name, (param.name, route, name)


@pytest.mark.parametrize(("target", "pipeline"), CASES)
def test_compiled_parameters_are_the_declared_ones(compiled, target, pipeline):
    declared = {p.name: p for p in parameters_of(pipeline, target)}
    inputs = compiled[(target, pipeline)][0]["root"]["inputDefinitions"]["parameters"]
    assert set(inputs) == set(declared)
    kinds = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN"}
    for name, param in declared.items():
        assert inputs[name]["parameterType"] == kinds[param.type], name
        assert inputs[name].get("description", "").strip() == " ".join(param.help.split()), name
        if param.default is inspect.Parameter.empty:
            assert "defaultValue" not in inputs[name], name
        else:
            assert inputs[name]["defaultValue"] == param.default, name


def _node_selected_by(docs: list[dict], param: str) -> set[str]:
    """The tasks whose Kubernetes platform spec takes its node selector from pipeline parameter ``param``."""
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return {
        name.removeprefix("exec-")
        for name, spec in executors.items()
        if spec.get("nodeSelector", {}).get("nodeSelectorJson", {}).get("componentInputParameter", "")
        in (param, f"pipelinechannel--{param}")
    }


@pytest.mark.parametrize(("target", "pipeline"), CASES)
def test_every_parameter_reaches_every_input_it_declares(compiled, target, pipeline):
    """Each (step, input) route of each parameter, in every pipeline that runs the step, is fed by that
    parameter; and no compiled parameter goes unread."""
    docs = compiled[(target, pipeline)]
    tasks = _tasks(docs[0])
    steps = set(steps_of(pipeline, target))
    read = set()
    for param in parameters_of(pipeline, target):
        for route, name in param.to:
            for step in GROUPS.get(route, (route,)):
                if step not in steps:
                    continue
                if step in ("gpu", "gke"):  # what schedules every step that runs a model, set on the task
                    on_gpu = {
                        n
                        for n, t in tasks.items()
                        if _fed_by(t, f"pipelinechannel--{param.name}") and not n.startswith("condition-")
                    }
                    if name == "node_selector":  # kfp: in the Kubernetes platform spec
                        on_gpu = _node_selected_by(docs, param.name)
                    assert on_gpu == GPU_TASKS[pipeline], (target, pipeline, param.name)
                    read.add(param.name)
                    continue
                task_name = "train-op-custom-job" if step == "train_job" else f"{step.replace('_', '-')}-op"
                if step == "train" and pipeline == "finetune-multinode":
                    task_name = "train-op-custom-job"
                assert task_name in tasks, (pipeline, step)
                assert _fed_by(tasks[task_name], name) == param.name, (
                    f"{pipeline}: {task_name} input {name} is not fed by parameter {param.name}"
                )
                read.add(param.name)
    assert read == set(docs[0]["root"]["inputDefinitions"]["parameters"])


def test_the_multinode_job_runs_as_the_pipelines_account_in_its_network(compiled, travel_config):
    tasks = _tasks(compiled[("vertex", "finetune-multinode")][0])
    job = tasks["train-op-custom-job"]
    assert _fed_by(job, "service_account") == "service_account" and _fed_by(job, "network") == "network"
    account, network = "runner@p.iam.gserviceaccount.com", "projects/1/global/networks/v"
    cfg = load_config(DEMO, (f"vertex.service_account={account}", f"vertex.network={network}"))
    params = pipeline_parameters(cfg, "finetune-multinode")
    assert (params["service_account"], params["network"]) == (account, network)
    assert "service_account" not in pipeline_parameters(
        travel_config
    )  # single-node: the PipelineJob's account


def test_flattened_values_keep_their_encoding(travel_config):
    params = pipeline_parameters(travel_config)
    assert params["pii_types"] == ",".join(travel_config.data.clean.pii_types)  # names: comma-separated
    assert params["labels"] == "[]"  # a label set stays a JSON list (labels may hold commas)
    assert params["group_field"] == (travel_config.data.fields.group or "")
    assert params["preflight_sample_rows"] == travel_config.preflight.sample_rows


def test_in_process_stages_get_the_options_their_steps_get(travel_config):
    """`stage_options` (CLI, benchmarks) routes and decodes a config as the pipeline does for the step."""
    from components.clean.core import CleanOptions
    from components.ingest.core import IngestOptions
    from components.preflight.options import PreflightOptions
    from components.split.core import SplitOptions
    from components.train.core import TrainOptions
    from pipelines.parameters import stage_options

    cfg = travel_config
    ingest = stage_options(IngestOptions, "ingest", cfg)
    assert (ingest.shape, ingest.output_schema) == (cfg.data.effective_shape, cfg.task.output_schema)
    assert ingest.label_normalize == tuple(cfg.data.labels.normalize) and ingest.labels == []
    clean = stage_options(CleanOptions, "clean", cfg)
    assert clean.tokenizer == cfg.model.base and clean.pii_types == tuple(cfg.data.clean.pii_types)
    assert clean.max_tokens == cfg.train.max_length  # data.clean.max_tokens unset: the training length
    split = stage_options(SplitOptions, "split", cfg)
    assert (split.eval_fraction, split.seed, split.cover) == (cfg.data.split.eval_fraction, 13, None)
    train = stage_options(TrainOptions, "train", cfg, max_steps=7)
    assert train.max_steps == 7 and train.lora_target_modules == list(cfg.model.lora.target_modules)
    assert (train.seed, train.learning_rate) == (cfg.train.seed, cfg.train.learning_rate)
    preflight = stage_options(PreflightOptions, "preflight", cfg)
    assert preflight.sample_rows == cfg.preflight.sample_rows and preflight.gradient_checkpointing == "auto"
    assert preflight.packing is cfg.train.packing is False
    with pytest.raises(TypeError, match="no input named learning_rte"):
        TrainOptions.from_inputs(learning_rte=1e-3)
