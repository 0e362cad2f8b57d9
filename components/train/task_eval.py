"""Task metrics during training: at every validation pass, greedy generation on a fixed sample of the
validation slice (``train.task_eval_rows`` rows, drawn once with the training seed), scored by the task's
own scorer (components/common/scoring.py) with the evaluator's decoding (components/evaluate/core.py
``generate``: batched, left-padded, ``eval.max_new_tokens``, constrained when ``eval.decoding`` is), and
logged as ``eval_<metric>`` (``eval_exact_match``, ``eval_accuracy``, ...) beside ``eval_loss``. They are
what ``train.select_metric`` can judge instead of the loss.

The rows, the prompts and the decoding are those the evaluate step uses on the eval split, so the numbers
read the same way; they come from the validation slice, never from the eval rows the gate scores.

With several data-parallel processes each generates its share of the rows and the predictions are
gathered, so every process scores the same answers and takes the same best/stop decision.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from pathlib import Path

from components.common.scoring import TaskSpec, score
from components.common.tables import read_rows
from components.common.task import headline_metrics, prompt_token_ids, validation_metrics

PREFIX = "eval"  # the Trainer's metric prefix of a validation pass (eval_loss); task.validation_metrics


def metric_key(name: str) -> str:
    return f"{PREFIX}_{name}"


def task_keys(task_type: str) -> tuple[str, ...]:
    """The keys a validation pass adds for ``task_type`` (TaskProbe.measure): eval_<headline metric> and
    eval_cut_off; () when no task is known."""
    metrics = validation_metrics(task_type)[1:]  # eval_loss is the Trainer's own
    return (*metrics, metric_key("cut_off")) if metrics else ()


def lower_is_better(key: str) -> bool:
    """eval_loss and eval_cut_off fall as a model gets better; every task metric rises."""
    return key in (metric_key("loss"), metric_key("cut_off"))


class TaskProbe:
    """A fixed sample of validation rows, their prompts and targets, and the decoding to score them with."""

    def __init__(
        self,
        rows: list[dict],
        tokenizer,
        system_prompt: str,
        task: TaskSpec,
        *,
        max_new_tokens: int,
        decoding: str,
    ):
        self.tokenizer, self.task, self.max_new_tokens = tokenizer, task, max_new_tokens
        self.prompts = [prompt_token_ids(tokenizer, system_prompt, r["prompt"], r["history"]) for r in rows]
        self.targets = [r["completion"] for r in rows]
        self.factory = None
        if decoding != "free":  # constrained or both: the evaluator's primary decoding is the constrained one
            from components.evaluate.constrained import logits_processor_factory

            self.factory = logits_processor_factory(tokenizer, **task.constraint())

    @classmethod
    def sample(cls, validation_path: str | Path, n: int, seed: int, tokenizer, system_prompt: str, **kw):
        """``n`` rows of the validation slice (all when it has fewer), drawn with ``seed``; None when n is 0
        or the slice is empty."""
        rows = read_rows(validation_path) if n else []
        if not rows:
            return None
        rows = random.Random(seed).sample(rows, min(n, len(rows)))
        return cls(rows, tokenizer, system_prompt, **kw)

    def measure(self, model) -> dict[str, float]:
        """Generate for the sample with ``model`` (in eval mode) and score it: {eval_<metric>: value} for the
        task's headline metrics and the share of answers cut off by max_new_tokens."""
        from components.evaluate.core import generate, plan_batch_size

        rank, world = _rank_and_world()
        mine = list(range(rank, len(self.prompts), world))
        prompts = [self.prompts[i] for i in mine]
        predicted: list[str] = []
        cut: list[bool] = []
        if prompts:
            batch = plan_batch_size(model, prompts, self.max_new_tokens, 0)
            predicted, cut = generate(
                model, self.tokenizer, prompts, self.max_new_tokens, batch, self.factory
            )
        if world > 1:
            predicted, cut = _gather(mine, predicted, cut, len(self.prompts), world)
        metrics = score(self.task, predicted, self.targets).metrics
        shown = {name: float(metrics[name]) for name in headline_metrics(self.task.type) if name in metrics}
        shown["cut_off"] = sum(cut) / len(cut)
        return {metric_key(name): value for name, value in shown.items()}


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(mine: list[int], predicted: list[str], cut: list[bool], total: int, world: int):
    """Every process's (row index, answer, cut off) put back in row order, on every process."""
    import torch.distributed as dist

    parts: list = [None] * world
    dist.all_gather_object(parts, list(zip(mine, predicted, cut, strict=True)))
    by_row = {i: (p, c) for part in parts for i, p, c in part}
    return [by_row[i][0] for i in range(total)], [by_row[i][1] for i in range(total)]


@contextmanager
def generating(model, backend: str):
    """``model`` set up to generate, then put back as it was. Unsloth's patched models refuse to generate
    until ``FastLanguageModel.for_inference`` (and train again after ``for_training``)."""
    training = model.training
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    model.eval()
    try:
        yield model
    finally:
        if backend == "unsloth":
            FastLanguageModel.for_training(model)
        model.train(training)


def with_task_metrics(base: type, probe: TaskProbe | None, backend: str = "hf") -> type:
    """``base`` (a Trainer class) whose validation passes also measure ``probe``'s task metrics; the Trainer
    then logs them with eval_loss (MLflow, Vertex Experiments, the progress line) and hands them to the
    callbacks' on_evaluate (best checkpoint, early stopping). ``base`` itself when there is no probe.
    ``backend``: hf or unsloth (components/train/core.py resolve_backend)."""
    if probe is None:
        return base

    class TaskMetricsTrainer(base):
        def evaluation_loop(
            self,
            dataloader,
            description,
            prediction_loss_only=None,
            ignore_keys=None,
            metric_key_prefix=PREFIX,
        ):
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            if metric_key_prefix == PREFIX:  # a validation pass (not predict())
                with generating(self.accelerator.unwrap_model(self.model), backend) as model:
                    output.metrics.update(probe.measure(model))
            return output

    return TaskMetricsTrainer
