"""The train step's choices of attention kernel, fused kernels, optimizer and data loading
(components/train/speed.py), for every kind of machine, on CPU."""

from __future__ import annotations

import pytest

from components.train.core import TrainOptions, train
from components.train.speed import (
    Machine,
    SpeedError,
    resolve_attention,
    resolve_kernels,
    trainer_speed_args,
)

CPU = Machine(cuda=False)
GPU = Machine(cuda=True, bf16=True)
GPU_FLASH = Machine(cuda=True, bf16=True, flash_attn=True)
GPU_LIGER = Machine(cuda=True, bf16=True, liger=True)
SYSTEM = "You turn a travel request into a JSON list of commands."


@pytest.mark.parametrize(
    ("machine", "packing", "expected"),
    [
        (GPU_FLASH, True, "flash_attention_2"),  # varlen: packed rows neither see nor pay for each other
        (GPU_FLASH, False, "flash_attention_2"),
        (GPU, True, "flex_attention"),  # document masks: blocks across examples skipped
        (GPU, False, "sdpa"),
        (CPU, False, "sdpa"),
        (Machine(cuda=True, bf16=False, flash_attn=True), False, "sdpa"),  # flash-attn needs bf16/fp16
    ],
)
def test_auto_picks_the_fastest_correct_attention(machine, packing, expected):
    chosen, why = resolve_attention("auto", packing, machine)
    assert chosen == expected and why.startswith("auto")


def test_auto_packing_without_a_packed_kernel_is_refused_with_the_ways_out():
    with pytest.raises(SpeedError, match=r"train.packing needs .*Fix: train.packing false, or .*sdpa"):
        resolve_attention("auto", True, CPU)


@pytest.mark.parametrize("named", ["sdpa", "eager"])
def test_packing_on_a_dense_kernel_runs_only_when_named_and_says_what_it_costs(named):
    chosen, why = resolve_attention(named, True, CPU)
    assert chosen == named and "WARNING" in why and "whole packed row" in why
    assert resolve_attention(named, False, CPU) == (named, "as configured")


@pytest.mark.parametrize(
    ("named", "machine", "rule"),
    [
        ("flash_attention_2", GPU, "flash-attn installed=False"),
        ("flash_attention_2", CPU, "cuda=False"),
        ("flex_attention", CPU, "no backward pass on CPU"),
        ("paged", GPU, "use one of auto, sdpa"),
    ],
)
def test_an_attention_this_machine_cannot_run_is_refused(named, machine, rule):
    with pytest.raises(SpeedError, match=rule):
        resolve_attention(named, False, machine)


def test_kernels_and_loader_follow_the_machine():
    assert resolve_kernels("auto", GPU_LIGER) and not resolve_kernels("auto", GPU)
    assert not resolve_kernels("auto", CPU) and not resolve_kernels("none", GPU_LIGER)
    with pytest.raises(SpeedError, match=r"liger-kernel installed=False.*Fix: train\.kernels auto or none"):
        resolve_kernels("liger", GPU)
    gpu = trainer_speed_args("auto", GPU_LIGER)
    assert gpu["optim"] == "adamw_torch_fused" and gpu["use_liger_kernel"]
    assert gpu["liger_kernel_config"] == {"fused_linear_cross_entropy": False}  # TRL keeps its fused LM head
    assert gpu["dataloader_num_workers"] == 2 and gpu["dataloader_pin_memory"]
    cpu = trainer_speed_args("auto", CPU)
    assert cpu["dataloader_num_workers"] == 0 and not cpu["dataloader_pin_memory"]
    assert not cpu["use_liger_kernel"] and "liger_kernel_config" not in cpu


def test_the_trainer_loads_the_model_with_the_chosen_attention(canonical_table, tmp_path, capsys):
    from components.train.core import build_trainer

    for named in ("auto", "eager"):
        opts = TrainOptions(method="full", max_steps=1, batch_size=4, attn_implementation=named)
        trainer, _ = build_trainer(canonical_table, "tiny://travel", SYSTEM, opts, str(tmp_path / named))
        expected = "sdpa" if named == "auto" else "eager"
        assert trainer.model.config._attn_implementation == expected
        assert f"attention: {expected} (" in capsys.readouterr().out


def test_packing_with_auto_on_cpu_stops_before_training(canonical_table, tmp_path):
    opts = TrainOptions(method="full", max_steps=2, batch_size=4, packing=True)
    with pytest.raises(SpeedError, match=r"train\.packing needs"):
        train(canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_bad_names_are_refused_by_the_options():
    with pytest.raises(ValueError, match="attn_implementation='flash'"):
        TrainOptions(attn_implementation="flash").validate()
    with pytest.raises(ValueError, match="kernels='triton'"):
        TrainOptions(kernels="triton").validate()
