"""Export: LoRA merged into safetensors weights, evaluated again, refused when unsafe or divergent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from components.common.models import load_for_inference, read_model_info
from components.common.scoring import TaskSpec
from components.common.task import METRICS
from components.evaluate.core import evaluate
from components.export.card import CARD, LINEAGE, model_card, weights_hash
from components.export.core import ExportError, check_parity, export, merge, refuse_pickle, remote_code
from components.train.core import TrainOptions, train

SYSTEM = "You turn a travel request into a JSON list of commands."
TRAVEL = Path(__file__).resolve().parents[2] / "examples" / "travel"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, travel_rows):
    """A LoRA adapter trained briefly on the travel rows (its answers need not be good, only its own)."""
    from components.common.tables import write_rows

    tmp = tmp_path_factory.mktemp("adapter")
    rows = [{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in travel_rows[:300]]
    write_rows(rows[:260], tmp / "train.parquet")
    write_rows(rows[260:], tmp / "eval.parquet")
    opts = TrainOptions(
        method="lora",
        max_steps=30,
        batch_size=16,
        learning_rate=5e-3,
        lora_r=8,
        lora_alpha=16,
        lora_modules_to_save=["embed_tokens", "lm_head"],
    )
    train(tmp / "train.parquet", "tiny://travel", SYSTEM, opts, tmp / "adapter")
    return tmp


def _evaluate_adapter(adapter, tmp_path, task, kw: dict):
    """The adapter's evaluation on the eval rows (predictions in tmp_path/a.parquet): what export compares."""
    path = adapter / "adapter"
    return evaluate(str(path), adapter / "eval.parquet", SYSTEM, task, tmp_path / "a.parquet", **kw)


def _export(adapter, tmp_path, task, before, out: str, kw: dict, **overrides):
    """Export the adapter to tmp_path/out after its evaluation ``before``, with no gate rules and no
    tolerance; ``overrides`` replace any of export's arguments."""
    args = dict(
        eval_path=adapter / "eval.parquet",
        system_prompt=SYSTEM,
        task=task,
        adapter_metrics=before.metrics,
        adapter_predictions=tmp_path / "a.parquet",
        adapter_settings=before.settings,
        predictions_path=tmp_path / f"{out}.parquet",
        rules=[],
        tolerance=0.0,
    )
    return export(adapter / "adapter", tmp_path / out, **{**args, **kw, **overrides})


def test_merged_model_answers_like_the_adapter(adapter, tmp_path, travel_schema):
    task = TaskSpec("structured", travel_schema)
    kw = dict(max_new_tokens=48, batch_size=20, decoding="free")
    result = _export(adapter, tmp_path, task, _evaluate_adapter(adapter, tmp_path, task, kw), "exported", kw)
    assert result.kind == "merged" and read_model_info(adapter / "adapter")["kind"] == "lora"
    info = read_model_info(tmp_path / "exported")
    assert (
        info["kind"] == "full" and info["exported_from"] == "lora" and info["base_model"] == "tiny://travel"
    )
    assert "model.safetensors" in result.files and "adapter_model.safetensors" not in result.files
    headline = list(METRICS["structured"])
    assert [r["metric"] for r in result.parity] == headline  # no gate rules: the task's headline metrics
    assert all(r["ok"] and r["exported"] == r["adapter"] for r in result.parity), result.parity
    assert result.changed_answers == 0
    # the merged weights compute what base + adapter computed
    peft_model, tok = load_for_inference(str(adapter / "adapter"))
    merged_model, _ = load_for_inference(str(tmp_path / "exported"))
    ids = tok("Book a table in Rome for two", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(merged_model(ids).logits, peft_model(ids).logits, atol=1e-4, rtol=1e-4)


def test_a_metric_drop_beyond_tolerance_fails_the_export(adapter, tmp_path, travel_schema):
    task = TaskSpec("structured", travel_schema)
    kw = dict(max_new_tokens=48, batch_size=20, decoding="free", max_examples=10)
    before = _evaluate_adapter(adapter, tmp_path, task, kw)
    claimed = {
        **before.metrics,
        "schema_validity": before.metrics["schema_validity"] + 0.5,
    }  # parity checks it
    rules = [{"metric": "schema_validity", "equals": 1.0}]
    with pytest.raises(ExportError, match=r"EXPORT-003.*schema_validity"):
        _export(
            adapter, tmp_path, task, before, "x", kw, adapter_metrics=claimed, rules=rules, tolerance=0.01
        )
    other_rows = {**before.settings, "examples": 11}
    with pytest.raises(ExportError, match="other settings"):  # scored on other rows: no comparison
        _export(adapter, tmp_path, task, before, "y", kw, adapter_settings=other_rows)


def test_parity_checks_the_gated_metrics_against_the_tolerance():
    rows = check_parity(
        {"exact_match": 0.9, "schema_validity": 1.0},
        {"exact_match": 0.886, "schema_validity": 0.98},
        ["exact_match", "schema_validity"],
        tolerance=0.015,
    )
    assert [(r["metric"], r["ok"]) for r in rows] == [("exact_match", True), ("schema_validity", False)]


def test_pickle_weights_are_refused(tmp_path, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "m")
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ExportError, match=r"EXPORT-001.*pytorch_model.bin.*safetensors"):
        refuse_pickle(tmp_path / "m")
    with pytest.raises(ExportError, match="EXPORT-001"):
        merge(tmp_path / "m", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_model_code_runs_only_when_allow_listed_with_a_pinned_commit(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}))
    with pytest.raises(ExportError, match=r"EXPORT-002.*org/custom.*model.trust_remote_code"):
        remote_code(tmp_path, "org/custom", {})
    sha = "a" * 40
    assert remote_code(tmp_path, "org/custom", {"org/custom": sha}) == {
        "trust_remote_code": True,
        "revision": sha,
    }
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert remote_code(tmp_path, "org/plain", {}) == {}  # no code of its own: nothing to trust


def _travel_raw() -> dict:
    import yaml

    return yaml.safe_load((TRAVEL / "config.yaml").read_text())


def test_trust_remote_code_needs_a_commit_sha():
    from components.common.config_load import parse_config
    from components.common.config_rules import ConfigError

    raw = _travel_raw()
    raw["model"]["trust_remote_code"] = {"org/custom": "main"}
    with pytest.raises(ConfigError, match=r"MODEL-003.*'main' is not a 40-hex commit sha"):
        parse_config(raw, TRAVEL)


def test_card_and_lineage_stay_out_of_the_weights_hash(tmp_path, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "m")
    before = weights_hash(tmp_path / "m")
    (tmp_path / "m" / CARD).write_text("# card")
    (tmp_path / "m" / LINEAGE).write_text("{}")
    assert weights_hash(tmp_path / "m") == before
    (tmp_path / "m" / "config.json").write_text("{}")
    assert weights_hash(tmp_path / "m") != before


def test_model_card_says_what_the_model_is_and_where_it_came_from():
    text = model_card(
        name="travel-commands",
        task_type="structured",
        base_model="tiny://travel",
        model_info={"kind": "full", "exported_from": "lora", "train_options": {"lora_r": 8, "max_steps": 30}},
        manifest={
            "rows": {"in": 3000, "rejected": 72, "train": 2635, "eval": 293, "accounted": True},
            "sha256": {"train": "t" * 64, "eval": "e" * 64},
            "sources": [{"source": "train", "locator": "travel.jsonl", "sha256": "s" * 64, "rows_in": 3000}],
            "rejected_by_reason": {"DUPLICATE": 10},
        },
        gate_report="# Gate: PASSED\n\n| kind | metric |\n\n## Metrics vs baselines\n",
        parity="| metric |",
        lineage={
            "adapter": {"sha256": "a" * 64, "uri": "gs://b/adapter"},
            "merged": {"sha256": "m" * 64, "uri": "gs://b/m"},
        },
        config_hash="c" * 64,
    )
    assert "LoRA merged" in text and "`lora_r` | `8`" not in text and "| lora_r | `8` |" in text
    assert "| train | 2635 |" in text and "DUPLICATE 10" in text and "### Gate: PASSED" in text
    assert text.index("| adapter |") < text.index("| merged |") and "gs://b/adapter" in text
    assert "## Intended use and limits" in text


def test_the_vertex_registry_needs_a_project_and_a_staging_location():
    from components.common.config import registry_spec
    from components.common.config_load import parse_config
    from components.common.config_rules import ConfigError

    raw = _travel_raw()
    raw.setdefault("registry", {})["backend"] = "vertex"
    with pytest.raises(ConfigError, match=r"REG-001.*vertex.project=''"):
        parse_config(raw, TRAVEL)
    raw.setdefault("vertex", {}).update(project="my-proj", pipeline_root="gs://bucket/root/")
    spec = registry_spec(parse_config(raw, TRAVEL))
    assert spec["backend"] == "vertex" and spec["project"] == "my-proj"
    assert spec["staging_bucket"] == "gs://bucket/root/models" and "vllm" in spec["serving_image"]


def test_quantized_variants_are_written_and_evaluated_like_the_merged_model(adapter, tmp_path, travel_schema):
    task = TaskSpec("structured", travel_schema)
    kw = dict(max_new_tokens=48, batch_size=20, decoding="free", max_examples=20)
    before = _evaluate_adapter(adapter, tmp_path, task, kw)
    variants = dict(quantize_kinds=["nf4", "int8"], quantized_tolerance=1.0)
    result = _export(adapter, tmp_path, task, before, "exported", kw, **variants)
    assert [v.kind for v in result.variants] == ["nf4", "int8"]
    for v in result.variants:
        folder = tmp_path / "exported" / "quantized" / v.kind
        config = json.loads((folder / "config.json").read_text())
        method = config["quantization_config"]
        assert method["quant_method"] == "bitsandbytes"
        assert method["load_in_4bit"] if v.kind == "nf4" else method["load_in_8bit"]
        assert read_model_info(folder)["quantized"] == v.kind and (folder / "tokenizer.json").is_file()
        assert v.metrics["examples"] == 20 and [r["metric"] for r in v.parity] == [
            r["metric"] for r in result.parity
        ]
    assert "quantized/nf4/model.safetensors" in result.files


def test_an_unknown_quantization_is_refused(tmp_path):
    from components.export.core import quantize

    with pytest.raises(ExportError, match=r"EXPORT-004.*'gptq'"):
        quantize(tmp_path, tmp_path / "q", "gptq")


def test_export_settings_are_checked():
    from components.common.config_load import parse_config
    from components.common.config_rules import ConfigError

    raw = _travel_raw()
    raw["export"] = {"quantized_tolerance": 1.5}
    with pytest.raises(ConfigError, match=r"EXPORT-005.*export.quantized_tolerance=1.5"):
        parse_config(raw, TRAVEL)
    raw["export"] = {"quantize": ["nf4", "awq"]}
    with pytest.raises(ConfigError, match=r"export.quantize.1"):
        parse_config(raw, TRAVEL)
    raw["export"] = {"quantize": ["nf4"], "tolerance": 0.02}
    from pipelines.parameters import pipeline_parameters

    params = pipeline_parameters(parse_config(raw, TRAVEL))
    assert (params["export_quantize"], params["export_tolerance"]) == ("nf4", 0.02)
