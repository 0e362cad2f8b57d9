"""Training paths that need a CUDA device: QLoRA (bitsandbytes 4-bit NF4), bf16, and the Unsloth backend.

Skipped on CPU machines (the CPU side of the same code — the clear qlora error, backend resolution — is in
tests/unit/test_train.py). Run them where a GPU is lent: `python -m pytest -m gpu tests/gpu`.
"""

from __future__ import annotations

import importlib.util
import math

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SYSTEM = "You turn a travel request into a JSON list of commands."


def _train(canonical_table, tmp_path, **options):
    from components.train.core import TrainOptions, train

    opts = TrainOptions(
        **{"max_steps": 20, "batch_size": 8, "learning_rate": 2e-3, "logging_steps": 1, **options}
    )
    return train(canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "model", experiment="gpu-tests")


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed ([gpu])"
)
def test_qlora_trains_a_4bit_base_and_saves_an_adapter(canonical_table, tmp_path):
    result = _train(
        canonical_table, tmp_path, method="qlora", lora_modules_to_save=["embed_tokens", "lm_head"]
    )
    assert math.isfinite(result.final_loss) and result.final_loss < result.first_loss
    assert (tmp_path / "model" / "adapter_config.json").is_file()
    assert result.trainable_params < result.total_params


def test_bf16_full_fine_tune_on_gpu(canonical_table, tmp_path):
    result = _train(canonical_table, tmp_path, method="full", backend="hf")
    assert math.isfinite(result.final_loss) and result.final_loss < result.first_loss


@pytest.mark.skipif(
    importlib.util.find_spec("unsloth") is None, reason="unsloth not installed (extra [unsloth])"
)
def test_unsloth_backend_lora(canonical_table, tmp_path):
    from components.train.core import resolve_backend

    assert resolve_backend("auto", cuda=True) == "unsloth"
    result = _train(canonical_table, tmp_path, method="lora", backend="unsloth")
    assert math.isfinite(result.final_loss)
