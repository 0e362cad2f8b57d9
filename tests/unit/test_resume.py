"""Checkpoints and resume in the train stage: a SIGTERM'd run resumes where it stopped and ends exactly where
an uninterrupted run ends; half-written checkpoints are never resumed from; divergence stops training."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from components.common.models import read_model_info
from components.train.checkpoints import (
    MARKER,
    ResumeRefused,
    incomplete_reason,
    latest_complete,
    mark_complete,
    remove_newer,
    seed_from,
    write_run_key,
)
from components.train.core import TrainOptions, train
from components.train.guard import NonFiniteTraining

SYSTEM = "You turn a travel request into a JSON list of commands."
REPO = Path(__file__).resolve().parents[2]

# One training run in a fresh interpreter, as the KFP task runs it; prints the TrainResult as JSON.
_TRAIN_SCRIPT = """
import dataclasses, json, sys
from components.train.core import TrainOptions, train
opts, validation = TrainOptions(**json.loads(sys.argv[3])), sys.argv[5]
result = train(sys.argv[1], "tiny://travel", sys.argv[2], opts, sys.argv[4], validation_path=validation)
print("RESULT " + json.dumps(dataclasses.asdict(result)), flush=True)
"""


def _start(table: Path, opts: dict, out: Path, validation: Path | str = "") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [str(table), SYSTEM, json.dumps(opts), str(out), str(validation)]
    return subprocess.Popen(
        [sys.executable, "-u", "-c", _TRAIN_SCRIPT, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _is_step_log(line: str) -> bool:
    return line.startswith("{'loss'")  # transformers' PrinterCallback: one dict per logged step


def _fake_checkpoint(root: Path, step: int, *, complete: bool) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"w" * 1000)
    (folder / "optimizer.pt").write_bytes(b"o" * 2000)
    if complete:
        mark_complete(folder, step)
    return folder


def _sigterm_at(proc: subprocess.Popen, step: int) -> tuple[int, str]:
    """SIGTERM ``proc`` (a _start'ed run logging every step) once its log shows ``step``; (the step its
    SIGTERM checkpoint was saved at, its log). It must exit 143 (preempted)."""
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    lines, seen = [], 0
    for line in proc.stdout:
        lines.append(line)
        if _is_step_log(line):
            seen += 1
            if seen == step:
                proc.send_signal(signal.SIGTERM)
    watchdog.cancel()
    log = "".join(lines)
    assert proc.wait() == 143, log
    saved = [
        int(line.split("step ")[1].split(",")[0]) for line in lines if line.startswith("SIGTERM: saving")
    ]
    assert len(saved) == 1, log
    return saved[0], log


def test_sigterm_then_resume_matches_an_uninterrupted_run(canonical_table, tiny_model, tmp_path, travel_rows):
    """A SIGTERM'd run resumes and ends where an uninterrupted one ends, and its best validation pass
    survives: select best on a task metric that stays 0 on this short run (answers cut at 16 tokens are
    never exact; a tie is not better), so the best pass is step 5, before the SIGTERM. The resumed attempt
    carries that best so far from beside the checkpoints and writes the step-5 weights, as the
    uninterrupted run does (an attempt that forgot it would pick its own first pass)."""
    from components.common.tables import write_rows

    validation = tmp_path / "validation.parquet"
    write_rows(
        [{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in travel_rows[400:408]], validation
    )
    opts = {
        "method": "full",
        "max_steps": 40,
        "batch_size": 8,
        "learning_rate": 3e-3,
        "logging_steps": 1,
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "checkpoint_steps": 10,
        "eval_steps": 5,
        "select": "best",
        "select_metric": "eval_exact_match",
        "task_type": "structured",
        "output_schema": json.loads((REPO / "examples" / "travel" / "schema.json").read_text()),
        "max_new_tokens": 16,
    }
    # Attempt 1: SIGTERM once the log shows step 15.
    stopped_at, log = _sigterm_at(_start(canonical_table, opts, tmp_path / "model", validation), 15)
    assert 15 <= stopped_at < 40 and stopped_at - 15 < opts["checkpoint_steps"], log
    assert f"preempted (SIGTERM) at step {stopped_at}" in log
    checkpoint = tmp_path / "checkpoints" / f"checkpoint-{stopped_at}"
    assert (checkpoint / MARKER).is_file() and incomplete_reason(checkpoint) == ""
    assert not (tmp_path / "model").exists()  # no final model from a preempted attempt
    kept = json.loads((tmp_path / "checkpoints" / "best" / "best.json").read_text())
    assert (kept["metric"], kept["step"], kept["value"]) == ("eval_exact_match", 5, 0.0)

    # A newer half-written checkpoint (killed mid-save, no marker) must be passed over and cleared away.
    half = tmp_path / "checkpoints" / f"checkpoint-{stopped_at + 3}"
    half.mkdir()
    (half / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:1000])

    # Attempt 2: resumes from the SIGTERM checkpoint and runs to the end.
    retry = _start(canonical_table, opts, tmp_path / "model", validation)
    out, _ = retry.communicate(timeout=300)
    assert retry.returncode == 0, out
    assert f"resuming from step {stopped_at} ({checkpoint})" in out
    assert f"removed incomplete checkpoint {half}" in out and not half.exists()
    resumed = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    assert resumed["resumed_from_step"] == stopped_at and resumed["steps"] == 40
    assert len(resumed["loss_history"]) == 40  # the losses logged before the resume are kept
    assert (tmp_path / "model" / "model.safetensors").is_file()
    recipe = read_model_info(tmp_path / "model")["train_options"]
    assert recipe["max_steps"] == 40 and "checkpoint_dir" not in recipe  # the model, not where it was made

    # The same options without checkpoints, uninterrupted, in this process.
    plain = {**opts, "checkpoint_dir": ""}
    reference = train(
        canonical_table,
        "tiny://travel",
        SYSTEM,
        TrainOptions(**plain),
        tmp_path / "ref",
        validation_path=validation,
    )
    difference = abs(resumed["final_loss"] - reference.final_loss)
    print(
        f"\nSIGTERM after step 15 -> checkpoint at {stopped_at}; resumed final loss {resumed['final_loss']!r}, "
        f"uninterrupted {reference.final_loss!r}, |diff| {difference:.3g}"
    )
    assert difference <= 1e-4, (resumed["loss_history"], reference.loss_history)
    assert resumed["loss_history"][:stopped_at] == pytest.approx(
        reference.loss_history[:stopped_at], abs=1e-4
    )
    assert reference.selected_step == 5, reference.task_metrics  # the premise: no later pass is better
    assert resumed["selected_step"] == 5 and resumed["selection"] == reference.selection
    written = (tmp_path / "model" / "model.safetensors").read_bytes()
    assert written == (tmp_path / "checkpoints" / "best" / "model.safetensors").read_bytes()
    assert written == (tmp_path / "ref" / "model.safetensors").read_bytes()  # the same step-5 weights


def test_half_written_checkpoints_are_ignored(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    assert latest_complete(root) is None  # no folder yet
    good = _fake_checkpoint(root, 10, complete=True)
    _fake_checkpoint(root, 20, complete=False)  # killed before the marker
    truncated = _fake_checkpoint(root, 30, complete=True)
    with (truncated / "optimizer.pt").open("r+b") as fh:  # marked, then a file lost its tail
        fh.truncate(100)
    state_changed = _fake_checkpoint(root, 40, complete=True)
    (state_changed / "trainer_state.json").write_text(json.dumps({"global_step": 41}), encoding="utf-8")
    moved = _fake_checkpoint(root, 50, complete=True)
    moved.rename(root / "checkpoint-60")  # a marker for another step
    (root / "README.md").write_text("model card", encoding="utf-8")  # TRL writes one; not a checkpoint

    with caplog.at_level(logging.WARNING, logger="components.train.checkpoints"):
        assert latest_complete(root) == good
    reasons = "\n".join(caplog.messages)
    assert f"no {MARKER}" in reasons
    assert "optimizer.pt has 100 bytes, the marker recorded 2000" in reasons
    assert "trainer_state.json differs" in reasons
    assert "marker says step 50, folder says 60" in reasons

    removed = remove_newer(root, 10)
    assert len(removed) == 4 and sorted(p.name for p in root.iterdir()) == ["README.md", "checkpoint-10"]


def test_resume_refuses_checkpoints_of_a_longer_run(canonical_table, tmp_path):
    _fake_checkpoint(tmp_path / "checkpoints", 50, complete=True)
    opts = TrainOptions(method="full", max_steps=40, checkpoint_dir=str(tmp_path / "checkpoints"))
    with pytest.raises(ValueError, match="at step 50, max_steps=40"):
        train(canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "model")


@pytest.mark.parametrize("limit", [1, -1])
def test_save_total_limit_must_keep_two(canonical_table, tmp_path, limit):
    opts = TrainOptions(checkpoint_dir=str(tmp_path / "c"), save_total_limit=limit)
    with pytest.raises(ValueError, match=f"save_total_limit={limit}: use 2 or more"):
        train(canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "model")


def _nan_weights_copy(model_dir: Path, dest: Path) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, dest)
    weights = load_file(dest / "model.safetensors")
    name = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


@pytest.mark.parametrize(
    ("cause", "learning_rate", "first_bad_step"),
    [("a learning rate of 1e10", 1e10, 2), ("a NaN weight in the base model", 2e-4, 1)],
)
def test_training_stops_at_the_first_non_finite_step(
    canonical_table, tiny_model, tmp_path, cause, learning_rate, first_bad_step
):
    base = "tiny://travel"
    if "NaN" in cause:
        base = str(_nan_weights_copy(tiny_model, tmp_path / "nan-model"))
    opts = TrainOptions(
        method="full", max_steps=10, batch_size=4, learning_rate=learning_rate, logging_steps=5
    )
    with pytest.raises(
        NonFiniteTraining,
        match=rf"non-finite gradient at step {first_bad_step} \(the gradient norm was not finite\): .*"
        r"Lower the learning rate",
    ) as e:
        train(canonical_table, base, SYSTEM, opts, tmp_path / "model")
    assert e.value.step == first_bad_step, cause
    assert isinstance(e.value, FloatingPointError) and not (tmp_path / "model").exists()


@pytest.mark.parametrize("key", ["loss", "grad_norm"])
def test_a_non_finite_logged_loss_or_grad_norm_stops_training(tmp_path, key):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from components.train.guard import guard_callbacks

    losses: list[float] = []
    guard = guard_callbacks(losses, checkpointing=False)[0]
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=0.5, report_to=[], use_cpu=True)
    logs = {"loss": 1.5, "grad_norm": 0.3, key: math.inf}
    with pytest.raises(NonFiniteTraining, match=rf"non-finite {key} inf at step 7.*now 0.5") as e:
        guard.on_log(args, TrainerState(global_step=7), TrainerControl(), logs=logs)
    assert e.value.step == 7 and losses == []
    guard.on_log(args, TrainerState(global_step=8), TrainerControl(), logs={"loss": 1.25, "grad_norm": 0.3})
    assert losses == [1.25]


def test_the_guard_keeps_the_first_bad_step_on_the_device_and_checks_when_asked():
    import torch

    from components.train.guard import NonFiniteGuard

    guard = NonFiniteGuard()
    for step, norm in enumerate([0.5, 2.0, math.nan, 1.0, math.inf], start=1):
        guard.observe(torch.tensor(norm), step)
        assert torch.is_tensor(guard.first_bad)  # nothing read back to the host while observing
    with pytest.raises(NonFiniteTraining, match=r"non-finite gradient at step 3 .*now 0.01") as e:
        guard.check(0.01)
    assert e.value.step == 3
    healthy = NonFiniteGuard()
    healthy.observe(torch.tensor(1.0), 1)
    healthy.observe(None, 2)  # a step without a norm
    healthy.check(0.01)
    host = NonFiniteGuard()  # backends that hand back a float
    host.observe(1.0, 1), host.observe(float("nan"), 2), host.observe(float("inf"), 3)
    with pytest.raises(NonFiniteTraining, match="at step 2 "):
        host.check(0.01)


def test_a_checkpoint_after_a_non_finite_step_is_not_marked_complete(canonical_table, tmp_path):
    opts = TrainOptions(
        method="full",
        max_steps=6,
        batch_size=4,
        learning_rate=1e10,
        logging_steps=50,
        checkpoint_dir=str(tmp_path / "ckpt"),
        checkpoint_steps=3,
    )
    with pytest.raises(NonFiniteTraining, match="at step 2 "):
        train(canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "model")
    assert latest_complete(tmp_path / "ckpt") is None and not (tmp_path / "model").exists()


def test_a_checkpoint_without_trainer_state_cannot_be_marked(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished Trainer checkpoint"):
        mark_complete(tmp_path, 3)


# --- resuming an earlier run (`slmforge run --resume RUN`, the pipeline's resume_from) ---------------------

KEY = {"config_hash": "c" * 64, "train_data_sha256": "d" * 64}


def _earlier_run(root: Path, steps: tuple[int, ...], key: dict | None = KEY) -> Path:
    """A stopped local run's layout: <runs_root>/<run>/<pipeline run>/train-op/checkpoints."""
    checkpoints = root / "20261205-010203" / "slmforge-finetune-20261205010203" / "train-op" / "checkpoints"
    for step in steps:
        _fake_checkpoint(checkpoints, step, complete=True)
    if key is not None:
        write_run_key(checkpoints, key)
    return checkpoints


def test_seed_from_copies_the_newest_complete_checkpoint(tmp_path):
    earlier = _earlier_run(tmp_path / "runs", (10, 20))
    _fake_checkpoint(earlier, 30, complete=False)
    mine = tmp_path / "mine"
    assert seed_from(earlier, mine, KEY) == 20
    assert latest_complete(mine) == mine / "checkpoint-20"
    assert not incomplete_reason(mine / "checkpoint-20")
    assert sorted(p.name for p in mine.iterdir()) == ["checkpoint-20"]
    # a retried task keeps its own (newer) checkpoints instead of the earlier run's
    _fake_checkpoint(mine, 40, complete=True)
    assert seed_from(earlier, mine, KEY) == 40


@pytest.mark.parametrize(
    "key, rule, words",
    [
        ({**KEY, "config_hash": "e" * 64}, "RESUME-001", "config_hash eeeeeeeeeeee there, cccccccccccc here"),
        ({**KEY, "train_data_sha256": "f" * 64}, "RESUME-001", "train_data_sha256 ffffffffffff there"),
        (None, "RESUME-001", "left no slmforge_run.json"),
    ],
)
def test_seed_from_refuses_another_config_or_data(tmp_path, key, rule, words):
    earlier = _earlier_run(tmp_path / "runs", (10,), key)
    with pytest.raises(ResumeRefused, match=rf"\[{rule}\].*{words}.*Fix: "):
        seed_from(earlier, tmp_path / "mine", KEY)
    assert not (tmp_path / "mine").exists() or not any((tmp_path / "mine").iterdir())


def test_seed_from_refuses_a_run_without_a_complete_checkpoint(tmp_path):
    earlier = _earlier_run(tmp_path / "runs", ())
    _fake_checkpoint(earlier, 10, complete=False)
    with pytest.raises(ResumeRefused, match=r"\[RESUME-002\] .* holds no complete checkpoint"):
        seed_from(earlier, tmp_path / "mine", KEY)
    with pytest.raises(ResumeRefused, match=r"\[RESUME-002\] resume_from=.*: no such folder"):
        seed_from(tmp_path / "nowhere", tmp_path / "mine", KEY)


def test_a_rerun_names_the_stopped_run_it_could_resume(tmp_path):
    """Without --resume, a run whose config left a checkpoint says so and starts from step 0; with it, it
    resumes that run's checkpoints; another config's run is refused."""
    import typer
    from rich.console import Console

    from pipelines.cli import _resume_from
    from pipelines.local import leftovers

    runs = tmp_path / "runs"
    earlier = _earlier_run(runs, (10, 20))
    found = leftovers(runs)
    assert [(lo.run, lo.step, lo.checkpoints) for lo in found] == [("20261205-010203", 20, earlier)]
    assert leftovers(runs, "20261205-010203") == found == leftovers(runs, str(earlier.parents[1]))

    term = Console(record=True, width=200)
    assert _resume_from(runs, None, KEY["config_hash"], term) == ""
    assert (
        "run 20261205-010203 of this config stopped with a checkpoint at step 20; `--resume 20261205-010203` "
        "continues it. Starting from step 0." in term.export_text()
    )
    assert _resume_from(runs, None, "0" * 64, term) == ""  # another config's leftover is not mentioned
    assert term.export_text() == ""

    assert _resume_from(runs, "20261205-010203", KEY["config_hash"], term) == str(earlier)
    assert (
        "resuming run 20261205-010203: training continues from its checkpoint at step 20"
        in term.export_text()
    )
    with pytest.raises(typer.Exit):
        _resume_from(runs, "20261205-010203", "0" * 64, term)
    assert "[RESUME-001] --resume 20261205-010203: that run trained another config" in term.export_text()
