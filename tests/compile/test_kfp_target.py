"""`python compile.py --target kfp`: the pipelines for a Kubeflow Pipelines backend on GKE (infra/gke.tf).

A KFP backend on GKE schedules a step by its pod: the steps that run a model ask for `nvidia.com/gpu` (the
GPU limit), select the GPU pool by its label and the accelerator as GKE names it, and tolerate the pool's
taint (the Kubernetes platform spec, written by kfp-kubernetes); CPU steps ask for none of it, so the taint
keeps them off the pool. These tests read the compiled YAML the way the Vertex tests do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "travel" / "config.yaml"
MODEL_STEPS = {
    "finetune": {"train-op", "evaluate-op", "evaluate-base-op", "evaluate-champion-op", "export-op"},
    "evaluate": {"evaluate-op", "evaluate-base-op", "evaluate-champion-op"},
}
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def kfp_docs(tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("kfp")
    done = subprocess.run(
        [sys.executable, "compile.py", "--target", "kfp", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    paths = sorted(out.glob("*.yaml"))
    assert [p.name for p in paths] == ["evaluate.yaml", "finetune.yaml"]  # no multi-node: a Vertex CustomJob
    return {p.stem: list(yaml.safe_load_all(p.read_text())) for p in paths}


def _tasks(spec: dict) -> dict[str, dict]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return {name: t for name, t in tasks.items() if not name.startswith("condition-")}


@pytest.mark.parametrize("name", ["finetune", "evaluate"])
def test_model_steps_ask_for_a_gpu_on_the_gpu_pool_and_cpu_steps_for_none(kfp_docs, name):
    spec, platform = kfp_docs[name]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {e.removeprefix("exec-") for e in executors} == MODEL_STEPS[name]
    for task_name, task in _tasks(spec).items():
        executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        resources = spec["deploymentSpec"]["executors"][executor]["container"].get("resources", {})
        if task_name in MODEL_STEPS[name]:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu", task_name
            assert "accelerator_count" in resources["accelerator"]["resourceCount"], task_name
            k8s = executors[executor]
            assert k8s["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith(
                "gpu_node_selector"
            )
            assert k8s["tolerations"] == [TOLERATION]
        else:
            assert "accelerator" not in resources, task_name
            assert executor not in executors, task_name


def test_the_node_selector_names_the_accelerator_as_gke_does(kfp_docs):
    from components.common.config_load import load_config
    from pipelines.parameters import pipeline_parameters

    inputs = kfp_docs["finetune"][0]["root"]["inputDefinitions"]["parameters"]
    default = json.loads(inputs["gpu_node_selector"]["defaultValue"])
    assert default == {"cloud.google.com/gke-accelerator": "nvidia-l4", "slmforge/pool": "gpu"}
    cfg = load_config(DEMO, ("vertex.accelerator_type=NVIDIA_H100_80GB", "vertex.accelerator_count=2"))
    params = pipeline_parameters(cfg, "finetune", "kfp")
    assert json.loads(params["gpu_node_selector"])["cloud.google.com/gke-accelerator"] == "nvidia-h100-80gb"
    assert params["accelerator_count"] == 2
    assert set(params) == set(inputs)  # what `submit --kfp-host` will pass: every parameter of the template
    # the Vertex templates carry neither the node selector nor a platform spec
    assert "gpu_node_selector" not in pipeline_parameters(cfg, "finetune")


def test_every_accelerator_has_a_gke_name_the_gpu_pool_can_carry():
    """infra/variables.tf gpu_accelerator_type takes GKE's names: each is one of the price table's."""
    from components.preflight.prices import ACCELERATORS

    names = {a.gke_name for a in ACCELERATORS.values()}
    assert len(names) == len(ACCELERATORS) and all(n.startswith("nvidia-") for n in names)
    variables = (REPO / "infra" / "variables.tf").read_text(encoding="utf-8")
    default = variables.split('variable "gpu_accelerator_type"', 1)[1].split("default", 1)[1].split('"')[1]
    assert default in names


def test_an_unknown_target_is_refused():
    done = subprocess.run(
        [sys.executable, "compile.py", "--target", "gke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "invalid choice: 'gke'" in done.stderr
