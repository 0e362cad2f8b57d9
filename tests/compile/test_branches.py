"""Every parameter a DAG's tasks read must be an input of that DAG. The KFP compiler passes a condition
branch (``dsl.If``) only the parameters its tasks take as inputs, so a pipeline parameter named only in a
resource setting (``set_accelerator_type(accelerator_type)``) inside a branch compiles to a reference that
does not resolve: kfp.local fails with "Parent pipeline input argument ... not found", and so would Vertex."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


def _references(node) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "componentInputParameter" and isinstance(value, str):
                found.add(value)
            else:
                found |= _references(value)
    elif isinstance(node, list):
        for value in node:
            found |= _references(value)
    return found


def _dags(spec: dict) -> dict[str, tuple[dict, set[str]]]:
    dags = {
        "root": (spec["root"]["dag"], set(spec["root"].get("inputDefinitions", {}).get("parameters", {})))
    }
    for name, comp in spec["components"].items():
        if "dag" in comp:
            dags[name] = (comp["dag"], set(comp.get("inputDefinitions", {}).get("parameters", {})))
    return dags


@pytest.mark.parametrize("name", ["finetune", "finetune-multinode", "evaluate"])
def test_every_parameter_a_branch_reads_is_its_input(tmp_path, name):
    from pipelines.compiler import compile_all

    paths = {p.stem: p for p in compile_all(tmp_path)}
    spec = yaml.safe_load(Path(paths[name]).read_text())
    checked = 0
    for dag_name, (dag, inputs) in _dags(spec).items():
        for task_name, task in dag.get("tasks", {}).items():
            missing = _references(task) - inputs
            assert not missing, f"{dag_name}/{task_name} reads {sorted(missing)}, not inputs of {dag_name}"
            checked += 1
    assert checked > 5


def test_the_check_finds_a_parameter_missing_from_a_branch():
    spec = {
        "root": {"dag": {"tasks": {}}, "inputDefinitions": {"parameters": {"a": {}}}},
        "components": {
            "comp-condition-1": {
                "dag": {
                    "tasks": {
                        "t": {
                            "resources": {
                                "accelerator": {
                                    "resourceType": {
                                        "componentInputParameter": "pipelinechannel--accelerator_type"
                                    }
                                }
                            }
                        }
                    }
                },
                "inputDefinitions": {"parameters": {"pipelinechannel--x": {}}},
            }
        },
    }
    dag, inputs = _dags(spec)["comp-condition-1"]
    assert _references(dag["tasks"]["t"]) - inputs == {"pipelinechannel--accelerator_type"}
