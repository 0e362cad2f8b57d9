"""Config validation: every rule has an ID, names the field, and says the fix."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import yaml

from components.common.config import config_hash
from components.common.config_load import load_config, parse_config
from components.common.config_rules import ConfigError
from pipelines.parameters import pipeline_parameters

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "travel" / "config.yaml"


@pytest.fixture()
def raw() -> dict:
    return yaml.safe_load(DEMO.read_text())


def violations(raw: dict, base_dir: Path = DEMO.parent) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, base_dir)
    return err.value.violations


def test_every_shipped_config_loads():
    for path in sorted((REPO / "examples").glob("*/config.yaml")):
        cfg = load_config(path)
        assert Path(cfg.data.train).is_absolute()
        assert (cfg.task.output_schema is not None) == (cfg.task.type == "structured"), path
        assert bool(cfg.task.labels) == (cfg.task.type == "classification"), path


def test_demo_config_paths_are_resolved(travel_config):
    assert travel_config.data.train == str(DEMO.parent / "data" / "travel.jsonl")
    assert travel_config.task.output_schema["type"] == "array"


@pytest.mark.parametrize(
    ("edit", "rule", "where"),
    [
        (lambda r: r["data"].update(train="nope.jsonl"), "DATA-002", "data.train"),
        (lambda r: r["data"].update(train="  "), "DATA-001", "data.train"),
        (lambda r: r["data"]["split"].update(eval_fraction=0.9), "DATA-003", "data.split.eval_fraction"),
        (lambda r: r["data"].update(eval="held/out.jsonl"), "DATA-002", "data.eval"),
        (lambda r: r["data"].update(train="hf:only"), "DATA-004", "data.train"),
        (lambda r: r["data"].update(max_reject_rate=1.5), "DATA-005", "data.max_reject_rate"),
        (
            lambda r: r.update(preflight={"truncation_threshold": -0.1}),
            "DATA-005",
            "preflight.truncation_threshold",
        ),
        (
            lambda r: r["data"]["clean"].update(near_dup_threshold=1.0),
            "DATA-005",
            "data.clean.near_dup_threshold",
        ),
        (lambda r: r["data"]["clean"].update(pii="mask"), "CFG-003", "data.clean.pii"),
        (lambda r: r["data"].update(shape="csv"), "CFG-003", "data.shape"),
        (lambda r: r["task"].pop("schema"), "TASK-001", "task"),
        (lambda r: r["task"].update(schema="missing.json"), "TASK-002", "task.schema"),
        (lambda r: r["model"].update(base="not a model"), "MODEL-001", "model.base"),
        (lambda r: r["model"].update(lora={"r": 8}), "MODEL-002", "(top)"),
        (lambda r: r["train"].update(max_steps=0), "TRAIN-001", "train.max_steps"),
        (lambda r: r["train"].update(nodes=0), "TRAIN-001", "train.nodes"),
        (lambda r: r["train"].update(processes_per_node=-2), "TRAIN-002", "train.processes_per_node"),
        (lambda r: r["gates"]["rules"].insert(0, {"metric": "exact_match"}), "GATE-001", "gates.rules.0"),
        (lambda r: r["gates"]["rules"].insert(0, {"metric": "bleu", "min": 1}), "GATE-002", "gates.rules.0"),
        (lambda r: r.pop("model"), "CFG-001", "model"),
        (lambda r: r["train"].update(max_stepz=3), "CFG-002", "train.max_stepz"),
        (lambda r: r["train"].update(batch_size="big"), "CFG-003", "train.batch_size"),
        (lambda r: r.update(name="Has Spaces"), "CFG-003", "name"),
    ],
)
def test_rule_ids(raw, edit, rule, where):
    edit(raw)
    found = violations(raw)
    assert (rule, where) in [(r, w) for r, w, _ in found], found


def test_error_message_names_rule_field_and_fix(raw):
    raw["data"]["split"]["eval_fraction"] = 2
    with pytest.raises(ConfigError) as err:
        parse_config(raw, DEMO.parent)
    text = str(err.value)
    assert "[DATA-003] data.split.eval_fraction" in text
    assert "eval_fraction=2.0 is outside (0, 0.5]" in text
    assert "Fix: use data.split.eval_fraction in (0, 0.5]" in text


def test_locators_keep_their_prefix_and_resolve_local_paths(raw):
    raw["data"].update(train="jsonl:data/travel.jsonl", eval="hf:org/name:test")
    cfg = parse_config(raw, DEMO.parent)
    assert cfg.data.train == f"jsonl:{DEMO.parent / 'data' / 'travel.jsonl'}"
    assert cfg.data.eval == "hf:org/name:test"  # remote: left as is


def test_a_field_map_in_the_config_fixes_the_shape(raw, travel_config):
    assert travel_config.data.effective_shape == "prompt_completion"  # the demo names its columns
    raw["data"].pop("fields")
    assert parse_config(raw, DEMO.parent).data.effective_shape == "auto"
    raw["data"]["shape"] = "messages"
    assert parse_config(raw, DEMO.parent).data.effective_shape == "messages"


def test_token_budget_defaults_to_the_training_length(travel_config):
    assert pipeline_parameters(travel_config)["max_tokens"] == travel_config.train.max_length


def test_unreadable_file(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="CFG-004"):
        load_config(bad)


def test_parameters_match_the_pipeline_signature(travel_config):
    from pipelines.finetune import finetune

    params = pipeline_parameters(travel_config)
    signature = inspect.signature(finetune.pipeline_func)
    assert set(params) == set(signature.parameters)


def test_config_hash_is_stable_and_sensitive(raw):
    a = parse_config(copy.deepcopy(raw), DEMO.parent)
    b = parse_config(copy.deepcopy(raw), DEMO.parent)
    assert config_hash(a) == config_hash(b)
    raw["train"]["max_steps"] += 1
    assert config_hash(parse_config(raw, DEMO.parent)) != config_hash(a)


def test_multi_node_training_is_vertex_only(raw, tmp_path):
    from pipelines.local import run_pipeline_local

    raw["train"].update(nodes=4, processes_per_node=8)
    params = pipeline_parameters(parse_config(raw, DEMO.parent))
    assert (params["train_nodes"], params["train_processes_per_node"]) == (4, 8)
    with pytest.raises(ValueError, match=r"train\.nodes=4 trains on a Vertex AI custom job"):
        run_pipeline_local(params, tmp_path)


@pytest.mark.parametrize(
    ("override", "rule"),
    [
        ("train.learning_rate=.nan", "CFG-003"),
        ("train.learning_rate=.inf", "CFG-003"),
        ("train.max_steps=true", "CFG-003"),
        ("train.lr_scheduler=cosin", "TRAIN-003"),
        ("train.warmup_ratio=1.5", "TRAIN-004"),
        ("train.max_steps=100000000000", "TRAIN-004"),
        ("train.batch_size=1000000", "TRAIN-004"),
        ("model.lora={r: 0}", "MODEL-004"),
        ("model.lora={dropout: 1.5}", "MODEL-004"),
        ("model.lora={alpha: -1}", "MODEL-004"),
        ("eval.max_new_tokens=0", "EVAL-002"),
        ("eval.batch_size=-1", "EVAL-002"),
        ("eval.max_examples=0", "EVAL-002"),
        ("data.max_row_bytes=-5", "DATA-006"),
        ("gates.rules=[{metric: exact_match, equals: 2.0}]", "GATE-007"),
        ("vertex.accelerator_count=0", "VTX-001"),
        ("vertex.accelerator_type=NVIDIA_FOO", "VTX-001"),
        ("data.train=gs://", "DATA-004"),
        ("data.train=file:///etc/passwd", "DATA-004"),
        ("task.output_schema={type: 12}", "TASK-002"),
    ],
)
def test_nonsense_values_are_refused_with_a_rule(override, rule):
    from components.common.config_load import load_config
    from components.common.config_rules import ConfigError

    lora = ["model.method=lora"] if override.startswith("model.lora") else []
    with pytest.raises(ConfigError) as e:
        load_config(REPO / "examples/travel/config.yaml", [*lora, override])
    assert [v[0] for v in e.value.violations] == [rule], str(e.value)


def test_scheduler_names_are_transformers_own():
    from transformers import SchedulerType

    from components.common.config_train import LR_SCHEDULERS

    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}


@pytest.mark.parametrize(
    ("text", "rule", "says"),
    [
        (b"name: a\nname: b\n", "CFG-006", "'name' appears twice"),
        (b"a: &a [1, 2]\nb: [*a, *a, *a]\n", "CFG-004", "aliases"),
        (b"name: caf\xe9\n", "CFG-004", "not UTF-8"),
    ],
)
def test_yaml_that_would_mislead_or_hang_is_refused(tmp_path, text, rule, says):
    from components.common.config_load import load_config
    from components.common.config_rules import ConfigError

    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.violations[0][0] == rule and says in e.value.violations[0][2]


def test_braces_in_a_rule_message_are_kept():
    from components.common.config_load import parse_config
    from components.common.config_rules import ConfigError

    raw = {
        "name": "x",
        "task": {"type": "generation"},
        "data": {"train": "gs://b/t.jsonl"},
        "model": {"base": "tiny://travel"},
        "vertex": {"labels": {"k": "^{1,62}$"}},
    }
    with pytest.raises(ConfigError, match=r"\^\{1,62\}\$"):
        parse_config(raw)


def test_tiny_model_of_an_unknown_example_is_refused_at_validate():
    from components.common.config_load import load_config
    from components.common.config_rules import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(REPO / "examples/travel/config.yaml", ["model.base=tiny://nope"])
    ((rule, where, msg),) = e.value.violations
    assert rule == "MODEL-001" and where == "model.base" and "tiny://travel" in msg and "examples/nope" in msg


def test_secrets_in_a_config_are_refused_and_never_printed():
    from components.common.config_load import load_config
    from components.common.config_rules import ConfigError

    key = "AKIAABCDEFGHIJKLMNOP"
    with pytest.raises(ConfigError) as e:
        load_config(
            REPO / "examples/travel/config.yaml",
            [
                f"task.system_prompt='You help. api_key: {key}'",
                "registry.tracking_uri=https://bob:hunter2@ml.example",
            ],
        )
    found = {(rule, where) for rule, where, _ in e.value.violations}
    assert found == {("CFG-007", "task.system_prompt"), ("CFG-007", "registry.tracking_uri")}
    assert key not in str(e.value) and "hunter2" not in str(e.value)
    assert "MLFLOW_TRACKING_USERNAME" in str(e.value)
