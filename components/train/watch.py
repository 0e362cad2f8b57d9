"""What training shows and watches: the live progress line (steps, training and validation loss, task
metrics, ETA), a validation pass at the last step too, the best pass so far (``train.select: best`` writes its weights) and
early stopping (``train.early_stopping_patience``). The best-so-far record lives beside the checkpoints, so
a resumed attempt carries it on."""

from __future__ import annotations

import json
import time
from pathlib import Path

from components.train.task_eval import PREFIX, lower_is_better

SELECT = ("last", "best")
BEST = "best"  # the best validation pass's weights and best.json, beside the checkpoints


def final_evaluation_callback():
    """A validation pass at the last step too (``eval_steps`` need not divide ``max_steps``)."""
    from transformers import TrainerCallback

    class EvaluateAtEnd(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if args.eval_strategy != "no" and state.global_step >= state.max_steps:
                control.should_evaluate = True

    return EvaluateAtEnd()


class Selection:
    """Best-so-far of ``opts.select_metric`` over the validation passes and the early-stopping count, kept in
    ``folder/best.json`` (with the best weights in ``folder`` when ``select`` is best) so that a resumed run
    carries them on: the folder sits beside the checkpoints, which outlive a preempted attempt."""

    def __init__(self, opts, folder: str | Path):
        self.opts, self.folder = opts, Path(folder)
        self.best: float | None = None
        self.best_step = 0
        self.bad = 0  # validation passes since the best one
        self.stopped_at = 0  # the step early stopping ended training at (0 = it did not)
        state = self.folder / "best.json"
        if state.is_file():  # a resumed run: its best so far
            saved = json.loads(state.read_text(encoding="utf-8"))
            self.best, self.best_step, self.bad = saved["value"], saved["step"], saved["bad"]

    @property
    def has_weights(self) -> bool:
        return (self.folder / "best.json").is_file() and any(self.folder.glob("*.safetensors"))

    def observe(self, step: int, metrics: dict, save) -> bool:
        """One validation pass at ``step``; ``save(folder)`` writes the current weights when they are the
        best so far and select is best. Returns True when training should stop (early stopping)."""
        value = metrics.get(self.opts.select_metric)
        if value is None:
            return False
        if self.best is None or (
            value < self.best if lower_is_better(self.opts.select_metric) else value > self.best
        ):
            self.best, self.best_step, self.bad = float(value), step, 0
            if self.opts.select == "best":
                save(self.folder)
        else:
            self.bad += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "metric": self.opts.select_metric,
            "value": self.best,
            "step": self.best_step,
            "bad": self.bad,
        }
        (self.folder / "best.json").write_text(json.dumps(record) + "\n", encoding="utf-8")
        patience = self.opts.early_stopping_patience
        if patience and self.bad >= patience:
            self.stopped_at = step
            return True
        return False

    def callback(self):
        from transformers import TrainerCallback

        selection = self

        class SelectAndStop(TrainerCallback):
            def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
                def save(folder):
                    if args.should_save:  # the main process writes
                        model.save_pretrained(folder, safe_serialization=True)

                if selection.observe(state.global_step, metrics or {}, save):
                    print(
                        f"early stopping at step {state.global_step}: {selection.opts.select_metric} has not "
                        f"improved on {selection.best:.4f} (step {selection.best_step}) for "
                        f"{selection.bad} validation passes",
                        flush=True,
                    )
                    control.should_training_stop = True

        return SelectAndStop()

    def describe(self, last_step: int) -> tuple[int, str]:
        """(the step whose weights are written, why)."""
        stop = f"; early stopping at step {self.stopped_at}" if self.stopped_at else ""
        if self.opts.select == "best" and self.has_weights:
            return self.best_step, (
                f"best {self.opts.select_metric} {self.best:.4f} at step {self.best_step} of {last_step}{stop}"
            )
        return last_step, f"last step {last_step}{stop}"


# A progress line the local runner's terminal shows while the step runs (pipelines/local.py reads it).
PROGRESS = "train progress: step {step}/{total} · loss {loss}{validation} · ETA {eta}"


def progress_callback(select_metric: str = "eval_loss", task_metrics: tuple[str, ...] = ()):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Print a PROGRESS line at every logging step: steps done, the logged loss, the last validation
        loss (and ``select_metric`` when it is a task metric) and the time left; and a line per validation
        pass with its loss, its ``task_metrics`` and its wall time."""

        def on_train_begin(self, args, state, control, **kw):
            self.start, self.first, self.validation = time.perf_counter(), state.global_step, ""

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "eval_loss" in logs:  # shown from now on, with the step it was measured at
                task = {  # eval_exact_match -> exact_match (components/train/task_eval.py)
                    k.removeprefix(f"{PREFIX}_"): float(logs[k]) for k in task_metrics if k in logs
                }
                shown = "".join(f" · {k} {v:.3f}" for k, v in task.items())
                judged = select_metric.removeprefix(f"{PREFIX}_")
                also = f" · {judged} {task[judged]:.3f}" if judged in task else ""
                self.validation = (
                    f" · validation loss {float(logs['eval_loss']):.4f}{also} (step {state.global_step})"
                )
                print(
                    f"train validation: step {state.global_step} · loss {float(logs['eval_loss']):.4f}{shown}"
                    f" · {float(logs.get('eval_runtime', 0)):.1f}s",
                    flush=True,
                )
            if not logs or "loss" not in logs or not state.max_steps:
                return
            done = state.global_step - self.first
            left = (
                (time.perf_counter() - self.start) / done * (state.max_steps - state.global_step)
                if done
                else 0
            )
            eta = f"{int(left // 60)}m{int(left % 60):02d}s"
            loss = f"{float(logs['loss']):.4f}"
            line = PROGRESS.format(
                step=state.global_step, total=state.max_steps, loss=loss, validation=self.validation, eta=eta
            )
            print(line, flush=True)

    return Progress()
