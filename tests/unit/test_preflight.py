"""Preflight: every failure mode caught by a fixture built to trigger it (a tokenizer or a table made
wrong on purpose), the happy path on the travel data, and the memory model's shape (monotone, qlora <
lora < full, a 7B full fine-tune does not fit an L4 while QLoRA does) on a 7B config without weights."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from dataclasses import replace

import pytest

from components.common.tables import write_rows
from components.common.tiny import CHAT_TEMPLATE
from components.preflight import prices
from components.preflight.core import PreflightFailed, check_strict, preflight
from components.preflight.memory import estimate_memory, lora_params, model_shape
from components.preflight.options import PreflightOptions
from components.preflight.plan import (
    batch_width,
    check_machine,
    check_memory,
    estimate_cost,
    expected_padded_length,
    micro_batch_candidates,
    plan_batches,
)
from components.preflight.report import plan_json, report_markdown

SYSTEM = "You turn a travel request into a JSON list of commands."
FAST = {"max_length": 192, "batch_size": 8, "max_steps": 100, "method": "lora"}


def canonical(rows: list[dict]) -> list[dict[str, str]]:
    return [{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in rows]


def table(tmp_path, rows, name="train.parquet"):
    path = tmp_path / name
    write_rows(rows, path)
    return path


def codes(result, severity=None) -> set[str]:
    return {f.code for f in result.findings if severity is None or f.severity == severity}


def tokenizer_variant(tiny_model, tmp_path, edit, name="model"):
    """A copy of the tiny model folder whose tokenizer ``edit`` has changed (weights untouched)."""
    from transformers import AutoTokenizer

    folder = tmp_path / name
    shutil.copytree(tiny_model, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    edit(tok)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def small_table(tmp_path_factory, travel_rows):
    return table(tmp_path_factory.mktemp("pf"), canonical(travel_rows[:60]))


# ---------------------------------------------------------------------------------------------------
# happy path


@pytest.fixture(scope="module")
def travel_result(tmp_path_factory, travel_rows, travel_config):
    path = table(tmp_path_factory.mktemp("travel"), canonical(travel_rows))
    opts = PreflightOptions(
        method=travel_config.model.method,
        max_length=travel_config.train.max_length,
        batch_size=travel_config.train.batch_size,
        max_steps=travel_config.train.max_steps,
        accelerator_type=travel_config.vertex.accelerator_type,
        accelerator_count=travel_config.vertex.accelerator_count,
        strict=True,
    )
    start = time.perf_counter()
    result = preflight(path, travel_config.model.base, travel_config.task.system_prompt, opts)
    return result, time.perf_counter() - start


def test_travel_data_passes_fast_with_a_consistent_plan(travel_result, travel_rows):
    result, seconds = travel_result
    assert seconds < 60
    assert not result.errors, result.findings
    check_strict(result)  # strict and clean: no exception
    plan = result.plan
    assert plan.fits and plan.micro_batch * plan.grad_accum == result.options.batch_size
    assert result.data.rows == len(travel_rows) and result.data.sampled == 2000
    assert result.data.truncated == result.data.zero_trainable == 0
    assert result.cost.machine_type == "g2-standard-8" and result.cost.usd > 0
    summary = plan_json(result)
    assert (summary["micro_batch"], summary["grad_accum"], summary["passed"]) == (
        plan.micro_batch,
        plan.grad_accum,
        True,
    )
    assert summary["est_memory_gib"] == round(plan.memory.total_gib, 2)
    md = report_markdown(result)
    assert md.startswith("# Preflight: PASSED") and "g2-standard-8" in md and "ASSUMED" in md
    # planned by tokens: rows as wide as the longest sampled row (no travel row reaches max_length)
    assert plan.width == result.data.max_tokens < result.options.max_length
    assert summary["tokens_per_micro_batch"] == plan.micro_batch * plan.width
    assert f"{plan.tokens_per_micro_batch:,} per micro-batch" in md


def test_memory_is_planned_by_tokens_per_micro_batch(shape_7b):
    from components.preflight.checks import DataStats

    data = DataStats(
        rows=100,
        sampled=100,
        mean_tokens=150.0,
        p95_tokens=190,
        max_tokens=200,
        truncated=0,
        zero_trainable=0,
    )
    padded = PreflightOptions(method="qlora", max_length=2048, batch_size=64)
    assert batch_width(padded, data) == 200  # a padded batch is as wide as its longest row
    assert batch_width(replace(padded, max_length=128), data) == 128  # longer rows are truncated
    packed = replace(padded, packing=True)
    assert batch_width(packed, data) == 2048  # packed sequences are full
    short = plan_batches(shape_7b, padded, width=batch_width(padded, data))
    full = plan_batches(shape_7b, packed, width=batch_width(packed, data))
    assert short.fits and full.fits and short.micro_batch > full.micro_batch  # more rows when they are short
    assert short.tokens_per_micro_batch == short.micro_batch * 200
    assert full.tokens_per_micro_batch == full.micro_batch * 2048
    assert short.micro_batch * short.grad_accum == full.micro_batch * full.grad_accum == 64


def test_shape_and_lora_count_match_the_real_model(tiny_model):
    """The meta-device count and the adapter formula against the instantiated model and PEFT."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = model_shape(AutoConfig.from_pretrained(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert shape.total_params == sum(p.numel() for p in model.parameters())
    for targets in (["all-linear"], ["q_proj", "v_proj"]):
        peft_targets = "all-linear" if targets == ["all-linear"] else targets
        adapted = get_peft_model(
            AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=8, target_modules=peft_targets)
        )
        trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
        assert lora_params(shape, 8, targets) == trainable


# ---------------------------------------------------------------------------------------------------
# (a) pad == eos


def test_pad_equal_to_eos_is_an_error_and_strict_fails(tiny_model, tmp_path, small_table):
    def pad_is_eos(tok):
        tok.pad_token = tok.eos_token

    base = tokenizer_variant(tiny_model, tmp_path, pad_is_eos)
    result = preflight(small_table, base, SYSTEM, PreflightOptions(**FAST))
    assert "PAD_IS_EOS" in codes(result, "error")
    check_strict(result)  # not strict: reported, not raised
    with pytest.raises(PreflightFailed, match="PAD_IS_EOS") as info:
        check_strict(result, strict=True)
    assert [f.code for f in info.value.findings] == [f.code for f in result.errors]


# ---------------------------------------------------------------------------------------------------
# (b) BOS count


def with_bos(template: str):
    def edit(tok):
        tok.add_special_tokens({"bos_token": "<|bos|>"})
        tok.chat_template = template

    return edit


def test_template_emitting_bos_per_message_is_double_bos(tiny_model, tmp_path, small_table):
    per_message = CHAT_TEMPLATE.replace(
        "{{ '<|im_start|>' + message", "{{ bos_token + '<|im_start|>' + message"
    )
    base = tokenizer_variant(tiny_model, tmp_path, with_bos(per_message))
    result = preflight(small_table, base, SYSTEM, PreflightOptions(**FAST))
    assert "DOUBLE_BOS" in codes(result, "error")
    with pytest.raises(PreflightFailed, match="DOUBLE_BOS"):
        check_strict(result, strict=True)


def test_template_bos_plus_tokenizer_bos_doubles_on_the_text_path(tiny_model, tmp_path, small_table):
    """The chat template prepends the BOS text and the tokenizer adds its own with add_special_tokens:
    two BOS when the rendered prompt is tokenized as text. Training (apply_chat_template) keeps one."""

    def edit(tok):
        with_bos("{{ bos_token }}" + CHAT_TEMPLATE)(tok)
        tok.add_bos_token = True  # the tokenizer now prepends BOS to any text it encodes

    base = tokenizer_variant(tiny_model, tmp_path, edit)
    result = preflight(small_table, base, SYSTEM, PreflightOptions(**FAST))
    assert "DOUBLE_BOS_TEXT" in codes(result, "warning")
    assert "DOUBLE_BOS" not in codes(result) and not result.errors


# ---------------------------------------------------------------------------------------------------
# (c) train and eval render the prompt differently


@pytest.mark.parametrize(
    "generation_prompt",
    ["<|im_start|>assistant\n ", "<|im_start|>model\n"],
    ids=["trailing-space", "other-header"],
)
def test_generation_prompt_unlike_the_training_render(tiny_model, tmp_path, small_table, generation_prompt):
    generation = "{{ '<|im_start|>assistant\n' }}"  # a real newline inside the Jinja string, as in tiny.py
    template = CHAT_TEMPLATE.replace(generation, "{{ '" + generation_prompt + "' }}")
    assert template != CHAT_TEMPLATE

    def edit(tok):
        tok.chat_template = template

    base = tokenizer_variant(tiny_model, tmp_path, edit)
    result = preflight(small_table, base, SYSTEM, PreflightOptions(**FAST))
    mismatch = [f for f in result.findings if f.code == "TEMPLATE_MISMATCH"]
    assert mismatch and mismatch[0].severity == "error" and mismatch[0].count == 60


# ---------------------------------------------------------------------------------------------------
# (d) no trainable token, (e) truncation rate


def test_prompt_longer_than_max_length_leaves_no_trainable_token(tiny_model, tmp_path, travel_rows):
    rows = canonical(travel_rows[:40])
    rows[7] = {**rows[7], "prompt": "Book a hotel in Paris and a flight to Rome. " * 40}
    result = preflight(table(tmp_path, rows), "tiny://travel", SYSTEM, PreflightOptions(**FAST))
    empty = [f for f in result.findings if f.code == "NO_TRAINABLE_TOKENS"]
    assert empty and empty[0].severity == "error" and empty[0].examples == [rows[7]["id"]]
    assert result.data.zero_trainable == 1
    assert "ROWS_TRUNCATED" in codes(result, "warning")  # 1 of 40 = 2.5%: below the 5% threshold


def test_truncation_rate_above_threshold(tmp_path, travel_rows):
    rows = canonical(travel_rows[:100])
    long_answer = json.dumps([{"command": "set_slot", "slot": "city", "value": "Paris"}] * 12)
    for r in rows[:10]:  # 10%: the prompt fits, the end of the answer is cut off
        r["completion"] = long_answer
    path = table(tmp_path, rows)
    result = preflight(path, "tiny://travel", SYSTEM, PreflightOptions(**FAST))
    assert "TRUNCATION_RATE_EXCEEDED" in codes(result, "error")
    assert "NO_TRAINABLE_TOKENS" not in codes(result) and result.data.truncated == 10
    relaxed = preflight(path, "tiny://travel", SYSTEM, PreflightOptions(**FAST, truncation_threshold=0.2))
    assert "ROWS_TRUNCATED" in codes(relaxed, "warning") and not relaxed.errors


# ---------------------------------------------------------------------------------------------------
# memory model on a 7B shape, no weights


@pytest.fixture(scope="module")
def shape_7b():
    from transformers import Qwen2Config

    config = Qwen2Config(  # Qwen2-7B dimensions
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    return model_shape(config)


def gib(shape, method, seq=512, micro=1, acc="NVIDIA_L4", **kw) -> float:
    return estimate_memory(shape, method, seq, micro, acc, **kw).total_gib


def test_7b_shape_is_counted_without_weights(shape_7b):
    assert 7.5e9 < shape_7b.total_params < 7.7e9
    # r=16 on every linear of the 28 layers: 16 x (in + out), about 40 M
    assert 35e6 < lora_params(shape_7b, 16, ["all-linear"]) < 45e6


def test_memory_is_monotone_in_sequence_length_and_batch(shape_7b):
    for method in ("full", "lora", "qlora"):
        for checkpointing in (True, False):
            kw = {"gradient_checkpointing": checkpointing}
            by_seq = [gib(shape_7b, method, seq=s, micro=8, **kw) for s in (128, 512, 2048, 8192)]
            by_micro = [gib(shape_7b, method, seq=2048, micro=m, **kw) for m in (1, 4, 16, 64)]
            for values in (by_seq, by_micro):
                assert values == sorted(values) and values[0] < values[-1], (method, checkpointing, values)
                if method != "full":  # no large AdamW step copy to hide the activations behind
                    assert all(a < b for a, b in itertools.pairwise(values)), (method, checkpointing, values)
    # never decreasing, but flat while AdamW's step temporaries outweigh the activations (full fine-tune,
    # micro-batch 1, checkpointing: the 14 GB step copy of a 7B model dominates short sequences)
    flat = [gib(shape_7b, "full", seq=s) for s in (128, 512, 2048)]
    assert flat == sorted(flat) and flat[0] == flat[-1]
    assert gib(shape_7b, "lora", seq=2048, gradient_checkpointing=False) > gib(shape_7b, "lora", seq=2048)


def test_qlora_below_lora_below_full_and_l4_fits_only_qlora(shape_7b):
    for seq, micro in ((256, 1), (1024, 4)):
        assert (
            gib(shape_7b, "qlora", seq, micro)
            < gib(shape_7b, "lora", seq, micro)
            < gib(shape_7b, "full", seq, micro)
        )
    assert not estimate_memory(shape_7b, "full", 512, 1, "NVIDIA_L4").fits
    assert estimate_memory(shape_7b, "qlora", 4096, 16, "NVIDIA_L4").total_gib > 22  # long and wide: no
    assert estimate_memory(shape_7b, "qlora", 512, 1, "NVIDIA_L4").fits
    assert estimate_memory(shape_7b, "lora", 512, 1, "NVIDIA_A100_80GB").fits
    # full: 8 B/param + AdamW's step copy = 79 GiB, inside 79.1 GiB but not with the 5% headroom
    assert not estimate_memory(shape_7b, "full", 512, 1, "NVIDIA_A100_80GB").fits
    assert estimate_memory(shape_7b, "full", 512, 1, "NVIDIA_H200_141GB").fits


def test_plan_splits_the_batch_and_reports_what_does_not_fit(shape_7b):
    qlora = PreflightOptions(method="qlora", max_length=2048, batch_size=32)
    plan = plan_batches(shape_7b, qlora)
    assert plan.fits and plan.micro_batch * plan.grad_accum == 32 and plan.micro_batch < 32
    assert (
        list(plan.tried)[-1] == plan.micro_batch and plan.tried[plan.micro_batch] <= plan.memory.capacity_gib
    )
    full = PreflightOptions(method="full", max_length=2048, batch_size=32)
    plan = plan_batches(shape_7b, full)
    assert not plan.fits and (plan.micro_batch, plan.grad_accum) == (1, 32)
    [finding] = check_memory(plan, shape_7b, full)
    assert finding.code == "DOES_NOT_FIT" and finding.severity == "error"
    assert "qlora" in finding.message and "NVIDIA_H200_141GB" in finding.message


@pytest.mark.parametrize("batch,expected", [(32, [32, 16, 8, 4, 2, 1]), (24, [24, 8, 4, 2, 1]), (7, [7, 1])])
def test_micro_batches_divide_the_batch(batch, expected):
    assert micro_batch_candidates(batch) == expected
    assert all(batch % m == 0 for m in expected)


def test_expected_padded_length_grows_with_the_micro_batch():
    lengths = [10, 20, 30, 40, 300]
    assert expected_padded_length(lengths, 1, 256) == pytest.approx((10 + 20 + 30 + 40 + 256) / 5)
    values = [expected_padded_length(lengths, m, 256) for m in (1, 2, 8, 64)]
    assert values == sorted(values) and values[-1] == pytest.approx(256, rel=1e-3)


# ---------------------------------------------------------------------------------------------------
# machines and prices


def test_price_table_cites_a_source_for_every_figure():
    for price in prices.PRICES.values():
        known = price.compute_engine_usd_per_hour is not None or price.vertex_usd_per_hour is not None
        assert (price.source != "not found" and price.seen) if known else price.note
    for acc in prices.ACCELERATORS.values():
        assert all(m in prices.PRICES for m in acc.machine_types.values())


def test_unavailable_shape_and_unknown_price_are_reported(travel_result):
    result, _ = travel_result
    h200_one = PreflightOptions(accelerator_type="NVIDIA_H200_141GB", accelerator_count=1)
    cost = estimate_cost(result.shape, h200_one, result.plan, result.data)
    assert [f.code for f in check_machine(h200_one, cost)] == ["NO_MACHINE_TYPE"]
    h200_eight = PreflightOptions(accelerator_type="NVIDIA_H200_141GB", accelerator_count=8)
    cost = estimate_cost(result.shape, h200_eight, result.plan, result.data)
    assert cost.machine_type == "a3-ultragpu-8g" and cost.usd is None
    assert [f.code for f in check_machine(h200_eight, cost)] == ["PRICE_UNKNOWN"]
    given = PreflightOptions(accelerator_type="NVIDIA_H200_141GB", accelerator_count=8, usd_per_hour=80.0)
    assert estimate_cost(result.shape, given, result.plan, result.data).usd > 0


def test_bad_options_name_the_fix(small_table):
    with pytest.raises(ValueError, match="use one of full, lora, qlora"):
        preflight(small_table, "tiny://travel", SYSTEM, PreflightOptions(method="dora"))
    with pytest.raises(ValueError, match="NVIDIA_L4"):
        preflight(small_table, "tiny://travel", SYSTEM, PreflightOptions(accelerator_type="NVIDIA_TESLA_K80"))


# ---------------------------------------------------------------------------------------------------
# the KFP component


def test_component_writes_plan_and_report_then_fails_when_strict(tiny_model, tmp_path, small_table):
    from kfp.dsl import Artifact, Dataset, Markdown

    from components.preflight.component import preflight_op

    def call(base, strict, out):
        data = Dataset(uri=str(small_table))
        data.metadata["sha256"] = "0" * 64
        report, plan = (
            Markdown(uri=str(tmp_path / out / "report.md")),
            Artifact(uri=str(tmp_path / out / "plan")),
        )
        args = dict(
            base_model=base,
            system_prompt=SYSTEM,
            method="lora",
            max_length=192,
            packing=False,
            batch_size=24,
            max_steps=50,
        )
        outputs = preflight_op.python_func(
            train_data=data,
            accelerator_type="NVIDIA_L4",
            accelerator_count=1,
            machine_type="",
            lora_r=16,
            lora_target_modules="q_proj, v_proj",
            strict=strict,
            truncation_threshold=0.05,
            max_new_tokens=128,
            sample_rows=2000,
            gradient_checkpointing="auto",
            config_hash="1" * 64,
            report=report,
            plan=plan,
            **args,
        )
        return outputs, report, plan

    outputs, report, plan = call("tiny://travel", True, "ok")
    saved = json.loads(open(plan.path, encoding="utf-8").read())
    # (micro_batch, grad_accum, gradient_checkpointing): the tiny model fits on an L4 without checkpointing
    assert tuple(outputs) == (saved["micro_batch"], saved["grad_accum"], saved["gradient_checkpointing"])
    assert tuple(outputs) == (24, 1, False)
    for key in ("micro_batch", "grad_accum", "est_memory_gib", "est_hours", "est_usd"):
        assert plan.metadata[key] == saved[key]
    assert plan.metadata["config_hash"] == "1" * 64 and plan.metadata["sha256"]
    assert report.metadata["passed"] is True

    broken = tokenizer_variant(tiny_model, tmp_path, lambda tok: setattr(tok, "pad_token", tok.eos_token))
    with pytest.raises(PreflightFailed, match="PAD_IS_EOS"):
        call(broken, True, "strict")
    assert "PAD_IS_EOS" in open(tmp_path / "strict" / "report.md", encoding="utf-8").read()


def test_answer_budget_warns_near_and_fails_over_max_new_tokens():
    from components.preflight.checks import Rendered, check_answer_budget

    def row(i: int, completion: int) -> Rendered:
        return Rendered(f"r{i}", list(range(10 + completion)), list(range(10)), 10)

    renders = [row(0, 40), row(1, 60), row(2, 95)]
    assert check_answer_budget(renders, 0) == [] and check_answer_budget(renders, 200) == []
    (near,) = check_answer_budget(renders, 100)
    assert (near.code, near.severity, near.count, near.examples) == (
        "TARGET_NEAR_MAX_NEW_TOKENS",
        "warning",
        1,
        ["r2"],
    )
    assert "raise eval.max_new_tokens to at least 106" in near.message
    (over,) = check_answer_budget(renders, 50)
    assert (over.code, over.severity, over.count) == ("TARGET_OVER_MAX_NEW_TOKENS", "error", 2)
    assert "longest 95 tokens" in over.message


def test_the_demo_leaves_room_for_its_answers(tiny_model, travel_config, canonical_table):
    """The travel completions fit the demo's eval.max_new_tokens with margin (no budget finding)."""
    from components.preflight.core import preflight
    from components.preflight.options import PreflightOptions

    opts = PreflightOptions(method="full", max_new_tokens=travel_config.eval.max_new_tokens, sample_rows=-1)
    result = preflight(canonical_table, "tiny://travel", travel_config.task.system_prompt, opts)
    assert not [f for f in result.findings if "MAX_NEW_TOKENS" in f.code], result.findings


def test_gradient_checkpointing_auto_is_off_only_when_the_plan_fits_without_it(tiny_model, shape_7b):
    """auto: off when the plan without checkpointing fits at the same micro-batch, else on; true and false
    are kept as they are. The decision is a finding of its own."""
    from transformers import AutoConfig

    from components.preflight.options import PreflightOptions
    from components.preflight.plan import resolve_checkpointing

    def decide(shape, **kw):
        options = PreflightOptions.from_inputs(gradient_checkpointing="auto", **kw)
        decided, findings = resolve_checkpointing(shape, options)
        assert [f.code for f in findings] == ["GRADIENT_CHECKPOINTING_AUTO"]
        return decided.gradient_checkpointing, findings[0].message

    tiny = model_shape(AutoConfig.from_pretrained(tiny_model))
    off, why = decide(tiny, method="lora", max_length=512, batch_size=8)
    assert off is False and "gradient checkpointing off" in why
    # 7B QLoRA on a 24 GB L4 with 4k-token rows: only checkpointing keeps a micro-batch that fits
    on, why = decide(shape_7b, method="qlora", max_length=4096, batch_size=8, accelerator_type="NVIDIA_L4")
    assert on is True and "gradient checkpointing on" in why
    for choice, expected in (("true", True), ("false", False)):
        options = PreflightOptions.from_inputs(gradient_checkpointing=choice)
        assert resolve_checkpointing(tiny, options) == (PreflightOptions(gradient_checkpointing=expected), [])
    with pytest.raises(ValueError, match="gradient_checkpointing='sometimes': use true, false or auto"):
        PreflightOptions.from_inputs(gradient_checkpointing="sometimes")
