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


# Tracking only where MLflow is installed: the lent GPU machine has no MLflow (it does not fit the wheels
# carried there), and these tests are about the GPU paths, not tracking.
TRACKING = {"experiment": "gpu-tests"} if importlib.util.find_spec("mlflow") else {}


def _train(canonical_table, tmp_path, **options):
    from components.train.core import TrainOptions, train

    opts = TrainOptions(
        **{"max_steps": 20, "batch_size": 8, "learning_rate": 2e-3, "logging_steps": 1, **options}
    )
    return train(canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "model", **TRACKING)


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


def test_packing_trains_with_a_packed_attention_kernel(canonical_table, tmp_path, capsys):
    """auto picks flash_attention_2 (when installed) or flex_attention for packed rows on a GPU."""
    result = _train(canonical_table, tmp_path, method="full", packing=True, max_length=1024, batch_size=2)
    out = capsys.readouterr().out
    assert "attention: flash_attention_2" in out or "attention: flex_attention" in out, out[-2000:]
    assert math.isfinite(result.final_loss) and result.final_loss < result.first_loss


@pytest.mark.skipif(
    importlib.util.find_spec("liger_kernel") is None, reason="liger-kernel not installed ([gpu])"
)
def test_liger_kernels_train(canonical_table, tmp_path):
    result = _train(canonical_table, tmp_path, method="lora", kernels="liger")
    assert math.isfinite(result.final_loss)


def test_the_non_finite_guard_never_syncs_with_the_host():
    """torch's sync debug mode raises on any synchronizing call: observing a CUDA gradient norm must not."""
    from components.train.guard import NonFiniteGuard, NonFiniteTraining

    guard = NonFiniteGuard()
    norms = [torch.tensor(v, device="cuda") for v in (0.5, float("nan"), 2.0)]
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step, norm in enumerate(norms, start=1):
            guard.observe(norm, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with pytest.raises(NonFiniteTraining, match="at step 2 "):
        guard.check(1e-3)


def test_static_cache_decodes_like_the_default_on_the_gpu(tiny_model, travel_rows):
    from components.common.models import load_for_inference
    from components.common.task import prompt_token_ids
    from components.evaluate.core import generate

    model, tok = load_for_inference("tiny://travel")
    assert model.device.type == "cuda"
    prompts = [
        prompt_token_ids(tok, SYSTEM, r["prompt"]) for r in travel_rows[:: len(travel_rows) // 32][:32]
    ]
    dynamic = generate(model, tok, prompts, 32, 16)
    assert generate(model, tok, prompts, 32, 16, cache_implementation="static") == dynamic


def test_evaluation_plans_its_batch_from_gpu_memory_and_runs_in_bf16(tiny_model, travel_rows):
    from components.common.models import load_for_inference
    from components.evaluate.core import CPU_BATCH, plan_batch_size

    model, _ = load_for_inference("tiny://travel", dtype=torch.bfloat16)
    model.to("cuda")
    prompts = [[1] * 100] * 5000
    planned = plan_batch_size(model, prompts, 128, 0)
    assert planned > CPU_BATCH  # a tiny model on a GPU: far more rows fit than the CPU default
    assert plan_batch_size(model, prompts[:10], 128, 0) == 10 and plan_batch_size(model, prompts, 128, 7) == 7
