"""train: supervised fine-tuning with TRL's SFTTrainer — full weights or a LoRA adapter.

Rows become conversational prompt/completion examples (components/common/task.py), which TRL renders
with the tokenizer's chat template and masks so the loss falls on completion tokens only. The output
folder is a loadable Model artifact: weights (or adapter) + tokenizer + slmforge_model.json.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.common.models import load_tokenizer, resolve_base, write_model_info
from components.common.tables import read_rows
from components.common.task import training_example


@dataclass
class TrainOptions:
    method: str = "lora"  # full | lora
    max_steps: int = 500  # optimizer steps
    batch_size: int = 32  # examples per step per device
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    max_length: int = 256  # tokens, prompt + completion; longer rows are truncated
    seed: int = 42
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    lora_modules_to_save: list[str] = field(default_factory=list)
    group_by_length: bool = False  # batch rows of similar length: less padding, but less mixed batches
    logging_steps: int = 10


def module_names(comma_separated: str) -> list[str]:
    """A pipeline parameter like "q_proj, v_proj" as a list of module names ("" = none)."""
    return [name.strip() for name in comma_separated.split(",") if name.strip()]


@dataclass
class TrainResult:
    first_loss: float
    final_loss: float
    steps: int
    runtime_s: float
    trainable_params: int
    total_params: int
    loss_history: list[float]


def _device_flags() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), "use_cpu": False}
    # CPU: 1 intra-op thread unless the user chose (2 threads ran 14-20x slower under load on 2 cores).
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return {"bf16": False, "use_cpu": True}


def build_trainer(
    train_path: str | Path, base_model: str, system_prompt: str, opts: TrainOptions, scratch: str
):
    """The configured SFTTrainer (and the list its callback fills with logged losses)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    if opts.method not in ("full", "lora"):
        raise ValueError(f"method={opts.method!r}: use full or lora (qlora needs the GPU image)")
    set_seed(opts.seed)
    device = _device_flags()
    base_path = resolve_base(base_model)
    tokenizer = load_tokenizer(base_path)
    model = AutoModelForCausalLM.from_pretrained(
        base_path, dtype=torch.bfloat16 if device["bf16"] else torch.float32
    )
    rows = read_rows(train_path)
    dataset = Dataset.from_list(
        [training_example(system_prompt, r["prompt"], r["completion"], r["history"]) for r in rows]
    )

    peft_config = None
    if opts.method == "lora":
        from peft import LoraConfig

        targets = opts.lora_target_modules
        peft_config = LoraConfig(
            r=opts.lora_r,
            lora_alpha=opts.lora_alpha,
            lora_dropout=opts.lora_dropout,
            target_modules="all-linear" if targets == ["all-linear"] else targets,
            modules_to_save=opts.lora_modules_to_save or None,
            # With tied embeddings, a trained embed_tokens copy must stay tied to the output layer, or the
            # LM head stays random and the loss stalls near ln(vocab).
            ensure_weight_tying=bool(opts.lora_modules_to_save) and bool(model.config.tie_word_embeddings),
            task_type="CAUSAL_LM",
        )

    losses: list[float] = []

    class _Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                loss = float(logs["loss"])
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss {loss} at step {state.global_step}; lower the lr"
                    )
                losses.append(loss)

    args = SFTConfig(
        output_dir=scratch,
        max_steps=opts.max_steps,
        per_device_train_batch_size=opts.batch_size,
        learning_rate=opts.learning_rate,
        lr_scheduler_type=opts.lr_scheduler,
        warmup_steps=round(opts.warmup_ratio * opts.max_steps),
        max_length=opts.max_length,
        train_sampling_strategy="group_by_length" if opts.group_by_length else "random",
        completion_only_loss=True,
        logging_steps=opts.logging_steps,
        logging_first_step=True,
        save_strategy="no",
        report_to=[],
        seed=opts.seed,
        data_seed=opts.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **device,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_Record()],
    )
    return trainer, losses


def train(
    train_path: str | Path,
    base_model: str,
    system_prompt: str,
    opts: TrainOptions,
    out_dir: str | Path,
) -> TrainResult:
    """Fine-tune ``base_model`` on the canonical table at ``train_path``; save the result to ``out_dir``."""
    with tempfile.TemporaryDirectory() as scratch:
        trainer, losses = build_trainer(train_path, base_model, system_prompt, opts, scratch)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trainer.model.parameters())
        start = time.perf_counter()
        trainer.train()
        runtime = time.perf_counter() - start
    if not losses:
        raise RuntimeError("training logged no loss; max_steps must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(out, safe_serialization=True)
    trainer.processing_class.save_pretrained(out)
    write_model_info(out, kind=opts.method, base_model=base_model, train_options=asdict(opts))
    return TrainResult(
        first_loss=losses[0],
        final_loss=losses[-1],
        steps=trainer.state.global_step,
        runtime_s=runtime,
        trainable_params=trainable,
        total_params=total,
        loss_history=losses,
    )
