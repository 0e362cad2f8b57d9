"""train: supervised fine-tuning with TRL's SFTTrainer — full weights or a LoRA adapter.

Rows become conversational prompt/completion examples (components/common/task.py), which TRL renders
with the tokenizer's chat template and masks so the loss falls on completion tokens only. The output
folder is a loadable Model artifact: weights (or adapter) + tokenizer + slmforge_model.json.

Checkpoints and resume. With ``TrainOptions.checkpoint_dir`` set, the Trainer saves a checkpoint every
``checkpoint_steps`` optimizer steps (weights or adapter, optimizer, scheduler, RNG states and the trainer
state, whose global step fixes the data position), and ``train()`` resumes from the newest *complete* one
(components/train/checkpoints.py) before training; the resumed run reproduces an uninterrupted one. In the
pipeline the component passes a folder inside its own output location: on Vertex that output URI is a GCS
path the runtime mounts with gcsfuse (/gcs/...), so a retried task finds the checkpoints of the attempt that
was killed. On SIGTERM (preemption, or the pod being stopped) the current step is finished, a checkpoint is
saved and ``train()`` raises ``Preempted`` (exit status 143) without writing the final model, so the retry
resumes instead of shipping a half-trained model. A save that outlasts the grace period (~30 s on Vertex
before SIGKILL) is cut off; it has no completion marker, so the retry resumes from the checkpoint before it.

Training stops with ``NonFiniteTraining`` at the first non-finite loss or gradient.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.common.models import (
    SAFE_WEIGHTS,
    check_loadable,
    load_tokenizer,
    resolve_base,
    write_model_info,
)
from components.common.options import StepOptions
from components.common.scoring import TaskSpec
from components.common.tables import read_rows
from components.common.task import training_example, validation_metrics
from components.train.checkpoints import checkpoint_step, latest_complete, remove_newer
from components.train.guard import NonFiniteGuard, guard_callbacks, guarded_trainer
from components.train.speed import ATTENTION, KERNELS, Machine, resolve_attention, trainer_speed_args
from components.train.task_eval import TaskProbe, task_keys, with_task_metrics
from components.train.watch import (
    BEST,
    SELECT,
    Selection,
    final_evaluation_callback,
    progress_callback,
)


@dataclass
class TrainOptions(StepOptions):
    LIST_INPUTS = ("lora_target_modules", "lora_modules_to_save")
    JSON_INPUTS = ("output_schema", "labels")

    method: str = "lora"  # full | lora | qlora (4-bit NF4 base via bitsandbytes; CUDA only)
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
    # Optimizer steps between validation-loss passes over the validation slice (0 = never); with no slice
    # given, no evaluation runs.
    eval_steps: int = 100
    select: str = "last"  # last | best: the model written is the last step's, or the best validation pass's
    # What "best" and early stopping judge: eval_loss (lower is better) or eval_<task metric> (higher is better)
    select_metric: str = "eval_loss"
    early_stopping_patience: int = 0  # stop after this many validation passes without improvement; 0 = never
    # Task metrics at every validation pass (components/train/task_eval.py): this many validation rows generated
    # with the evaluator's decoding and scored by the task's scorer; off (0, or no task_type) = loss only.
    task_eval_rows: int = 64
    task_type: str = ""  # the task (config task.*); "" = none known here: no task metrics
    output_schema: dict | None = None
    labels: list[str] | None = None
    max_new_tokens: int = 128  # eval.max_new_tokens
    decoding: str = "free"  # eval.decoding: free, or constrained (both = constrained, its primary)
    # Folder for resumable checkpoints ("" = none). Must outlive the process to be of use: in the pipeline
    # a folder in the component's output location (gcsfuse on Vertex), so a retried task resumes.
    checkpoint_dir: str = ""
    # Optimizer steps between checkpoints. None at max_steps: the final model is written there instead.
    checkpoint_steps: int = 100
    # Checkpoints kept, newest first; 0 = keep all. 1 is refused: the Trainer deletes the previous
    # checkpoint before the new one is marked complete, so a kill in between would leave none to resume.
    save_total_limit: int = 2
    packing: bool = False  # pack rows into full sequences (TRL bfd, padding-free): no padding waste
    grad_accum: int = (
        1  # micro-batches per optimizer step: batch_size // grad_accum rows each (preflight plan)
    )
    backend: str = "auto"  # auto | hf | unsloth: auto = Unsloth when installed and a CUDA GPU is present
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    # Recompute activations in the backward pass: far less activation memory, ~1/3 more compute. The
    # pipeline turns it off when preflight's memory model says the plan fits without it (train.
    # gradient_checkpointing: auto); on is TRL's SFTConfig default.
    gradient_checkpointing: bool = True
    # Attention kernel and fused kernels (components/train/speed.py): auto picks the fastest correct one here.
    attn_implementation: str = "auto"  # auto | sdpa | flex_attention | flash_attention_2 | eager
    kernels: str = "auto"  # auto | liger | none

    def validate(self) -> None:
        if self.method not in ("full", "lora", "qlora"):
            raise ValueError(f"method={self.method!r}: use full, lora or qlora")
        if self.backend not in ("auto", "hf", "unsloth"):
            raise ValueError(f"backend={self.backend!r}: use auto, hf or unsloth")
        if self.attn_implementation not in ATTENTION:
            raise ValueError(f"attn_implementation={self.attn_implementation!r}: use {', '.join(ATTENTION)}")
        if self.kernels not in KERNELS:
            raise ValueError(f"kernels={self.kernels!r}: use {', '.join(KERNELS)}")
        if self.eval_steps < 0:
            raise ValueError(f"eval_steps={self.eval_steps}: use a number of steps >= 1, or 0 for none")
        metrics = validation_metrics(self.task_type if self.task_eval_rows else "")
        if self.select not in SELECT or self.select_metric not in metrics:
            raise ValueError(
                f"select={self.select!r}, select_metric={self.select_metric!r}: use select last or best and "
                f"select_metric {' or '.join(metrics)} (task {self.task_type or 'none'}, task_eval_rows "
                f"{self.task_eval_rows})"
            )
        if self.early_stopping_patience < 0:
            raise ValueError(f"early_stopping_patience={self.early_stopping_patience}: use 0 (never) or more")
        if self.grad_accum < 1 or self.batch_size % self.grad_accum:
            raise ValueError(f"grad_accum={self.grad_accum} must divide batch_size={self.batch_size}")
        if self.checkpoint_dir:
            if self.checkpoint_steps < 1:
                raise ValueError(f"checkpoint_steps={self.checkpoint_steps}: use a number of steps >= 1")
            if self.save_total_limit == 1 or self.save_total_limit < 0:
                raise ValueError(
                    f"save_total_limit={self.save_total_limit}: use 2 or more (0 = keep all); with 1 a kill "
                    "during a save can leave no complete checkpoint"
                )


# Where and how often checkpoints went says nothing about the model (and a run-specific path would make the
# artifact's content hash differ between identical runs); the task's schema and labels are the config's,
# recorded by its hash, not training settings.
_NOT_RECIPE = ("checkpoint_dir", "checkpoint_steps", "save_total_limit", "output_schema", "labels")


def recipe(opts: TrainOptions) -> dict[str, Any]:
    """The options that say how the model was trained: tracked as run params and kept in the model info."""
    return {k: v for k, v in asdict(opts).items() if k not in _NOT_RECIPE}


UNSLOTH_ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def resolve_backend(backend: str, cuda: bool) -> str:
    """hf or unsloth. Unsloth cannot even be imported without a CUDA device (it raises "cannot find any
    torch accelerator"), so auto only looks for it when one is present; asking for it without one is an
    error that says so."""
    import importlib.util

    if backend == "hf":
        return "hf"
    installed = cuda and importlib.util.find_spec("unsloth") is not None
    if backend == "unsloth" and not installed:
        raise ValueError(
            "train.backend unsloth needs a CUDA GPU and the unsloth package (pip install 'slmforge[unsloth]', in an environment with datasets<5); "
            f"here: cuda={cuda}. Fix: train.backend auto or hf, or run on the trainer image with a GPU"
        )
    return "unsloth" if installed else "hf"


def _load_model(base_path: str, opts: TrainOptions, device: dict, backend: str, attention: str = "sdpa"):
    """(model, tokenizer, peft_config) for the method and backend; peft_config None when already applied.
    ``attention``: the attention implementation of the Hugging Face backend (Unsloth picks its own)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device["bf16"] else torch.float32
    if opts.method == "qlora" and device["use_cpu"]:
        raise ValueError(
            "model.method qlora loads the base model in 4-bit NF4 with bitsandbytes kernels that need a CUDA "
            "GPU, and none is present. Fix: run the train step on a GPU (vertex.accelerator_type), or use "
            "model.method lora on CPU"
        )
    targets = opts.lora_target_modules
    if backend == "unsloth":  # GPU only (resolve_backend); its own loader and LoRA patching
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            base_path, max_seq_length=opts.max_length, dtype=None, load_in_4bit=opts.method == "qlora"
        )
        if opts.method != "full":
            model = FastLanguageModel.get_peft_model(
                model,
                r=opts.lora_r,
                lora_alpha=opts.lora_alpha,
                lora_dropout=opts.lora_dropout,
                target_modules=UNSLOTH_ALL_LINEAR if targets == ["all-linear"] else targets,
                modules_to_save=opts.lora_modules_to_save or None,
                random_state=opts.seed,
                use_gradient_checkpointing="unsloth" if opts.gradient_checkpointing else False,
            )
        return model, tokenizer, None
    tokenizer = load_tokenizer(base_path)
    quantization = None
    if opts.method == "qlora":
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(  # the QLoRA recipe: NF4, double quantization, bf16 compute
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    check_loadable(base_path)
    model = AutoModelForCausalLM.from_pretrained(
        base_path,
        dtype=dtype,
        quantization_config=quantization,
        attn_implementation=attention,
        **SAFE_WEIGHTS,
    )
    peft_config = None
    if opts.method in ("lora", "qlora"):
        from peft import LoraConfig

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
    return model, tokenizer, peft_config


@dataclass
class TrainResult:
    first_loss: float
    final_loss: float
    steps: int
    runtime_s: float  # this attempt's training time; a resumed run counts only the steps it ran
    trainable_params: int
    total_params: int
    loss_history: list[float]  # every logged loss of the whole run, the ones before a resume included
    # (global step, validation loss) of every validation pass of the whole run; [] without a slice
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    task_metrics: dict[str, float] = field(default_factory=dict)  # the last validation pass's eval_<metric>
    validation_s: float = 0.0  # wall time of this attempt's validation passes (loss and task metrics)
    resumed_from_step: int = 0  # global step of the checkpoint this attempt resumed from (0 = fresh start)
    selected_step: int = 0  # the step whose weights were written (select: last = the last step)
    selection: str = ""  # why those weights, in words
    stopped_early: bool = False  # early stopping ended training before max_steps
    world_size: int = 1  # data-parallel processes (components/train/distributed.py)
    tracking: Any = None  # TrackingSummary: run id, tokens, padding efficiency, tokens/s, loss-curve PNG

    def metrics(self) -> dict[str, float]:
        """The scalar results the train step logs as its Metrics artifact."""
        keys = (
            "first_loss",
            "final_loss",
            "steps",
            "runtime_s",
            "trainable_params",
            "total_params",
            "resumed_from_step",
            "world_size",
            "selected_step",
            "stopped_early",
        )
        values = {k: float(getattr(self, k)) for k in keys}
        if self.eval_history:
            values["final_eval_loss"] = self.eval_history[-1][1]
            values["best_eval_loss"] = min(v for _, v in self.eval_history)
            values["validation_s"] = self.validation_s
            values.update({f"final_{k}": v for k, v in self.task_metrics.items()})
        if self.tracking is not None:
            values.update(
                {k: float(getattr(self.tracking, k)) for k in ("tokens_per_s", "padding_efficiency")}
            )
        return values


class Preempted(SystemExit):
    """SIGTERM arrived: a checkpoint was saved and the final model was not written; a retry resumes.

    A SystemExit so it ends the process with status 143 (128 + SIGTERM) and no generic handler swallows it.
    """

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(143)
        self.step, self.checkpoint = step, checkpoint

    def __str__(self) -> str:
        where = f"checkpoint saved to {self.checkpoint}" if self.checkpoint else "no complete checkpoint"
        return (
            f"preempted (SIGTERM) at step {self.step}: {where}; the final model was not written, "
            "a retry resumes from the checkpoint"
        )


def _global_rank() -> int:
    """This process's rank in a torchrun job (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def _device_flags() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), "use_cpu": False}
    # CPU: 1 intra-op thread unless the user chose (2 threads ran 14-20x slower under load on 2 cores).
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return {"bf16": False, "use_cpu": True}


def build_trainer(
    train_path: str | Path,
    base_model: str,
    system_prompt: str,
    opts: TrainOptions,
    scratch: str,
    callbacks: Sequence = (),
    validation_path: str | Path | None = None,
):
    """The configured SFTTrainer (and the list its callback fills with logged losses).

    Checkpoints go to ``opts.checkpoint_dir`` when set, else nowhere (``scratch`` holds the Trainer's
    other files). ``callbacks``: extra TrainerCallbacks, e.g. experiment tracking. ``validation_path``: the
    split's validation slice; with rows in it and ``opts.eval_steps`` > 0 the Trainer computes the
    validation loss (completion tokens only, like the training loss) every ``eval_steps`` steps and at the
    end, logged as ``eval_loss``.
    """
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    opts.validate()
    set_seed(opts.seed)
    device = _device_flags()
    backend = resolve_backend(opts.backend, cuda=not device["use_cpu"])
    machine = Machine.here()
    attention = "sdpa"
    if backend == "hf":
        attention, why = resolve_attention(opts.attn_implementation, opts.packing, machine)
        print(f"attention: {attention} ({why})", flush=True)
    model, tokenizer, peft_config = _load_model(resolve_base(base_model), opts, device, backend, attention)

    def examples(path):
        rows = read_rows(path)
        return Dataset.from_list(
            [training_example(system_prompt, r["prompt"], r["completion"], r["history"]) for r in rows]
        )

    dataset = examples(train_path)
    validation = examples(validation_path) if validation_path and opts.eval_steps else None
    if validation is not None and len(validation) == 0:
        validation = None
    probe = None  # task metrics at each validation pass (components/train/task_eval.py)
    if validation is not None and opts.task_type and opts.task_eval_rows:
        probe = TaskProbe.sample(
            validation_path,
            opts.task_eval_rows,
            opts.seed,
            tokenizer,
            system_prompt,
            task=TaskSpec(opts.task_type, opts.output_schema, list(opts.labels or [])),
            max_new_tokens=opts.max_new_tokens,
            decoding=opts.decoding,
        )

    losses: list[float] = []
    guard = NonFiniteGuard()
    checkpointing = bool(opts.checkpoint_dir)
    args = SFTConfig(
        output_dir=opts.checkpoint_dir or scratch,
        max_steps=opts.max_steps,
        per_device_train_batch_size=opts.batch_size // opts.grad_accum,
        gradient_accumulation_steps=opts.grad_accum,
        learning_rate=opts.learning_rate,
        weight_decay=opts.weight_decay,
        lr_scheduler_type=opts.lr_scheduler,
        warmup_steps=round(opts.warmup_ratio * opts.max_steps),
        max_length=opts.max_length,
        train_sampling_strategy="group_by_length" if opts.group_by_length else "random",
        completion_only_loss=True,
        packing=opts.packing,  # TRL's bfd packing is padding-free: rows share sequences, no pad tokens
        gradient_checkpointing=opts.gradient_checkpointing,
        logging_steps=opts.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if validation is not None else "no",
        eval_steps=opts.eval_steps or None,
        per_device_eval_batch_size=opts.batch_size // opts.grad_accum,
        prediction_loss_only=True,
        logging_nan_inf_filter=False,  # the default hides a NaN step loss behind the running mean
        save_strategy="steps" if checkpointing else "no",
        save_steps=opts.checkpoint_steps,
        save_total_limit=opts.save_total_limit or None,  # None = keep all
        report_to=[],
        seed=opts.seed,
        data_seed=opts.seed,
        **trainer_speed_args(opts.kernels, machine),
        disable_tqdm=True,
        **device,
    )
    trainer = with_task_metrics(guarded_trainer(SFTTrainer, guard), probe, backend)(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=validation,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[
            *guard_callbacks(losses, checkpointing, guard),
            progress_callback(opts.select_metric, task_keys(opts.task_type) if probe else ()),
            *callbacks,
        ],
    )
    return trainer, losses


class _SigtermFlag:
    """Set by the SIGTERM handler; read at the end of every optimizer step (handlers must not do more)."""

    def __init__(self) -> None:
        self.raised = False

    def __call__(self, signum, frame) -> None:
        self.raised = True


def _stop_on_sigterm_callback(flag: _SigtermFlag):
    from transformers import TrainerCallback

    class StopOnSigterm(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if flag.raised and state.global_step < state.max_steps:  # at max_steps the model is written
                print(f"SIGTERM: saving a checkpoint at step {state.global_step}, then stopping", flush=True)
                control.should_save = True
                control.should_training_stop = True

    return StopOnSigterm()


def _run(trainer, resume_from: Path | None, flag: _SigtermFlag | None) -> None:
    """``trainer.train()`` with ``flag`` as the SIGTERM handler meanwhile (main thread only)."""
    catch = flag is not None and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, flag) if catch else None
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        if catch:
            signal.signal(signal.SIGTERM, previous)


def train(
    train_path: str | Path,
    base_model: str,
    system_prompt: str,
    opts: TrainOptions,
    out_dir: str | Path,
    callbacks: Sequence = (),
    *,
    experiment: str = "",
    tracking_uri: str = "",
    artifact_dir: str | Path = "",
    validation_path: str | Path = "",
) -> TrainResult:
    """Fine-tune ``base_model`` on the canonical table at ``train_path``; save the result to ``out_dir``.

    With ``experiment`` set, params and per-step loss, learning rate, grad norm, tokens/s and padding
    efficiency go to MLflow (``tracking_uri``, else $MLFLOW_TRACKING_URI, else the embedded sqlite store)
    and, on Vertex, to Vertex AI Experiments (components/train/tracking.py); the loss-curve PNG is
    written to ``artifact_dir``. With ``validation_path`` (the split's validation slice), the validation loss
    is computed every ``opts.eval_steps`` and at the end, logged beside the training loss and drawn with it.

    With ``opts.checkpoint_dir`` set, resumes from its newest complete checkpoint, and raises ``Preempted``
    (status 143, final model not written) when SIGTERM stops training. Raises ``NonFiniteTraining`` at the
    first non-finite loss or gradient.
    """
    opts.validate()
    resume_from, resumed_step = None, 0
    if opts.checkpoint_dir:
        resume_from = latest_complete(opts.checkpoint_dir)
        resumed_step = checkpoint_step(resume_from) if resume_from else 0
        if resumed_step >= opts.max_steps:
            raise ValueError(
                f"{resume_from} is at step {resumed_step}, max_steps={opts.max_steps}: these checkpoints "
                "belong to a longer run; use an empty checkpoint_dir or raise max_steps"
            )
        if _global_rank() == 0:  # one process tidies the (shared) checkpoint folder
            for leftover in remove_newer(opts.checkpoint_dir, resumed_step):
                print(f"removed incomplete checkpoint {leftover}", flush=True)
        if resume_from:
            print(f"resuming from step {resumed_step} ({resume_from})", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        # the best pass's weights live beside the checkpoints (a resumed run keeps them), else in scratch
        selection = Selection(opts, Path(opts.checkpoint_dir or scratch) / BEST)
        tracker = None
        if experiment:
            from components.train.tracking import TrackingCallback, tracking_sinks

            params = {"base_model": base_model, "resumed_from_step": resumed_step, **recipe(opts)}
            tracker = TrackingCallback(
                tracking_sinks(experiment, tracking_uri),
                params,
                artifact_dir or scratch,
                stopped_early=lambda: bool(selection.stopped_at),
            )
            callbacks = [*callbacks, tracker]
        trainer, _ = build_trainer(
            train_path, base_model, system_prompt, opts, scratch, callbacks, validation_path or None
        )
        if trainer.args.eval_strategy != "no":
            trainer.add_callback(final_evaluation_callback())
            trainer.add_callback(selection.callback())
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trainer.model.parameters())
        flag = _SigtermFlag() if opts.checkpoint_dir else None
        if flag:
            trainer.add_callback(_stop_on_sigterm_callback(flag))
        start = time.perf_counter()
        try:
            _run(trainer, resume_from, flag)
        except BaseException:
            if tracker is not None:  # a diverged or broken run is recorded as FAILED, not left running
                tracker.end("FAILED")
            raise
        runtime = time.perf_counter() - start
        if flag and flag.raised and trainer.state.global_step < opts.max_steps:
            saved = latest_complete(opts.checkpoint_dir)
            stop = Preempted(trainer.state.global_step, saved)
            print(stop, flush=True)
            raise stop
        # The whole run's losses: a resumed trainer state carries the log history of the attempts before it.
        losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
        passes = [e for e in trainer.state.log_history if "eval_loss" in e]
        evals = [(int(e["step"]), float(e["eval_loss"])) for e in passes]
        last_pass = passes[-1] if passes else {}  # its task metrics (components/train/task_eval.py)
        task_metrics = {k: float(last_pass[k]) for k in task_keys(opts.task_type) if k in last_pass}
        validation_s = sum(float(e.get("eval_runtime", 0)) for e in passes if int(e["step"]) > resumed_step)
        if not losses:
            raise RuntimeError("training logged no loss; max_steps must be >= 1")
        selected_step, selection_text = selection.describe(trainer.state.global_step)
        print(f"model written: {selection_text}", flush=True)
        if trainer.is_world_process_zero():  # data parallel (components/train/distributed.py): one writer
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            if opts.select == "best" and selection.has_weights:  # the best validation pass's weights
                for weights in selection.folder.iterdir():
                    if weights.name != "best.json":
                        shutil.copy2(weights, out / weights.name)
            else:
                trainer.model.save_pretrained(out, safe_serialization=True)
            trainer.processing_class.save_pretrained(out)
            write_model_info(
                out,
                kind=opts.method,
                base_model=base_model,
                train_options=recipe(opts),
                selected=selection_text,
            )
    return TrainResult(
        first_loss=losses[0],
        final_loss=losses[-1],
        steps=trainer.state.global_step,
        runtime_s=runtime,
        trainable_params=trainable,
        total_params=total,
        loss_history=losses,
        eval_history=evals,
        task_metrics=task_metrics,
        validation_s=validation_s,
        resumed_from_step=resumed_step,
        selected_step=selected_step,
        selection=selection_text,
        stopped_early=bool(selection.stopped_at),
        world_size=trainer.args.world_size,
        tracking=tracker.summary if tracker is not None else None,
    )
