"""The non-finite guard: training stops with ``NonFiniteTraining`` at the first non-finite loss or gradient,
and costs nothing per step.

Every optimizer step the Trainer already computes the global gradient norm (to clip it, or to log it): a
non-finite loss or gradient anywhere makes that norm non-finite. ``NonFiniteGuard.observe`` keeps, on the
device, the first step whose norm was not finite — two small tensor ops, no host sync and no kernel per
parameter — and ``check`` reads it where the Trainer syncs with the host anyway: at every logging step, before
a checkpoint is marked complete (a checkpoint written after the bad step is never resumed from), and at the
end of training (so no final model is written). The error names the exact first bad step.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class NonFiniteTraining(FloatingPointError):
    """The loss or the gradients became NaN/inf: training diverged (or the data is broken)."""

    def __init__(self, what: str, step: int, learning_rate: float, detail: str = ""):
        self.what, self.step = what, step
        super().__init__(
            f"non-finite {what} at step {step}{detail}: training diverged or its input is broken. Lower the "
            f"learning rate (now {learning_rate:g}) or add warmup; check the data (empty completions, broken "
            "rows) and the base model"
        )


class NonFiniteGuard:
    """The first optimizer step whose gradient norm was not finite, kept where the norm lives."""

    def __init__(self) -> None:
        self.first_bad: Any = None  # a 0-d long tensor on the norm's device (0 = none yet), or an int

    def observe(self, norm: Any, step: int) -> None:
        """Record step ``step``'s gradient norm (a tensor, or a float from backends that return one)."""
        import torch

        if norm is None:
            return
        if not torch.is_tensor(norm):  # already on the host: no sync to avoid
            if not math.isfinite(float(norm)) and not self.first_bad:
                self.first_bad = step
            return
        if self.first_bad is None:
            self.first_bad = torch.zeros((), dtype=torch.long, device=norm.device)
        bad = ~torch.isfinite(norm.detach())
        self.first_bad = torch.where(bad & (self.first_bad == 0), step, self.first_bad)

    def check(self, learning_rate: float) -> None:
        """Raise ``NonFiniteTraining`` if any observed step had a non-finite gradient (a host sync: call it
        only where the Trainer syncs anyway)."""
        step = int(self.first_bad) if self.first_bad is not None else 0
        if step:
            raise NonFiniteTraining("gradient", step, learning_rate, " (the gradient norm was not finite)")


def guarded_trainer(base: type, guard: NonFiniteGuard) -> type:
    """``base`` (an SFTTrainer class) feeding every optimizer step's gradient norm to ``guard``.

    transformers 5.x calls ``Trainer._get_grad_norm`` once per optimizer step, after clipping and before the
    update, with the norm it computed (tests/unit/test_resume.py fails if a new version stops doing so).
    """

    class GuardedTrainer(base):
        def _get_grad_norm(self, model, grad_norm=None):
            norm = super()._get_grad_norm(model, grad_norm=grad_norm)
            guard.observe(norm, self.state.global_step + 1)
            return norm

    return GuardedTrainer


def guard_callbacks(losses: list[float], checkpointing: bool, guard: NonFiniteGuard | None = None) -> list:
    """Callbacks that record losses, stop at the first non-finite loss or gradient (components/train/
    guard.py: checked where the Trainer syncs anyway), and mark checkpoints."""
    from transformers import TrainerCallback

    from components.train.checkpoints import mark_complete

    guard = guard or NonFiniteGuard()

    class RecordAndGuard(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            guard.check(args.learning_rate)
            for key in ("loss", "grad_norm"):
                if logs and key in logs and not math.isfinite(float(logs[key])):
                    raise NonFiniteTraining(f"{key} {logs[key]}", state.global_step, args.learning_rate)
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

        def on_train_end(self, args, state, control, **kw):
            guard.check(args.learning_rate)  # before train() writes the final model

    class MarkComplete(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            # No checkpoint at max_steps (the Trainer's default): train() writes the final model right
            # after, and resuming from there would run one step past max_steps (transformers 5.x).
            if state.global_step >= state.max_steps:
                control.should_save = False

        def on_save(self, args, state, control, **kw):
            # Trainer._save_checkpoint has written the whole folder (weights, optimizer, scheduler, RNG,
            # trainer_state.json) and rotated old ones before on_save runs (transformers 5.x trainer.py,
            # _maybe_log_save_evaluate), so the marker goes last.
            guard.check(args.learning_rate)  # a checkpoint written after a bad step is never resumed from
            if args.should_save:  # the main process; the only one writing trainer_state.json
                mark_complete(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)

    return [RecordAndGuard(), *([MarkComplete()] if checkpointing else [])]
