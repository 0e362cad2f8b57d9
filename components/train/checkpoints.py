"""Training checkpoints: which ones are complete, and marking them so.

The HF Trainer writes ``checkpoint-<step>/`` folders (weights or adapter, optimizer, scheduler, RNG states and
trainer_state.json, which holds the global step and so the data position). A process killed mid-save leaves a
folder that looks like a checkpoint but is not one, so a folder counts as complete only once
``slmforge_complete.json`` sits in it. The marker is written after the Trainer has finished the folder (see
``core._Checkpoints.on_save``) and records the step, the sha256 of trainer_state.json and the size of every
file, so a truncated file is caught too, without hashing gigabytes of weights on a fuse mount.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "slmforge_complete.json"
TRAINER_STATE = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME
_FOLDER = re.compile(r"checkpoint-(\d+)")  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR + "-<step>"


def checkpoint_step(path: str | Path) -> int | None:
    """The step in a ``checkpoint-<step>`` folder name (None for any other name)."""
    match = _FOLDER.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_sizes(folder: Path) -> dict[str, int]:
    """Bytes per file under ``folder`` (posix paths relative to it), the marker itself left out."""
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER and not p.name.startswith(f".{MARKER}")
    }


def mark_complete(path: str | Path, step: int) -> Path:
    """Write the marker that makes the finished checkpoint folder ``path`` resumable; returns the marker."""
    folder = Path(path)
    state = folder / TRAINER_STATE
    if not state.is_file():
        raise FileNotFoundError(f"{state} is missing: {folder} is not a finished Trainer checkpoint")
    marker = {"step": int(step), "trainer_state_sha256": _sha256(state), "files": _file_sizes(folder)}
    # Write then rename: a kill mid-write leaves a temp file, never a marker that parses.
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=1), encoding="utf-8")
    os.replace(tmp, folder / MARKER)
    return folder / MARKER


def incomplete_reason(path: str | Path) -> str:
    """Why the checkpoint folder ``path`` cannot be resumed from ("" = it is complete)."""
    folder = Path(path)
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {MARKER} (killed while saving?)"
    except (OSError, ValueError) as exc:
        return f"unreadable {MARKER}: {exc}"
    step = checkpoint_step(folder)
    if marker.get("step") != step:
        return f"marker says step {marker.get('step')}, folder says {step}"
    for name, size in marker.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, the marker recorded {size}"
    state = folder / TRAINER_STATE
    if not state.is_file() or _sha256(state) != marker.get("trainer_state_sha256"):
        return f"{TRAINER_STATE} differs from the one the marker recorded"
    return ""


def _folders(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every checkpoint-<step> folder, newest first."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in root.iterdir() if p.is_dir()]
    return sorted(((step, p) for step, p in found if step is not None), reverse=True)


def latest_complete(checkpoint_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``checkpoint_dir`` (None if there is none).

    Incomplete folders are skipped with a warning; they are never resumed from.
    """
    for _, folder in _folders(checkpoint_dir):
        reason = incomplete_reason(folder)
        if not reason:
            return folder
        log.warning("ignoring incomplete checkpoint %s: %s", folder, reason)
    return None


def remove_newer(checkpoint_dir: str | Path, step: int) -> list[Path]:
    """Delete the checkpoint folders after ``step`` (the incomplete leftovers of a killed attempt).

    The resumed Trainer would otherwise save into them, and its save_total_limit rotation would count them
    and could delete complete checkpoints to keep them.
    """
    removed = []
    for folder_step, folder in _folders(checkpoint_dir):
        if folder_step > step:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


# --- resuming another run's training ------------------------------------------------------------------------
# A retried task finds its own checkpoints (same output location). A *new* run of the same config (`slmforge
# run --resume RUN`, or the pipeline's ``resume_from`` parameter) starts with an empty checkpoint folder; it
# is seeded with the newest complete checkpoint of the earlier run, provided both runs train the same thing:
# the run key (config hash and training-data hash) written beside the checkpoints must match.

RUN_KEY = "slmforge_run.json"


class ResumeRefused(ValueError):
    """The earlier run cannot be resumed by this one (rule RESUME-00x in the message)."""


def read_run_key(checkpoint_dir: str | Path) -> dict[str, str]:
    """The run key an earlier run left beside its checkpoints ({} when it left none)."""
    try:
        return json.loads((Path(checkpoint_dir) / RUN_KEY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_run_key(checkpoint_dir: str | Path, key: dict[str, str]) -> None:
    """Record what this run trains on (config and data hashes), so a later run can check it resumes it."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / RUN_KEY).write_text(json.dumps(key, indent=1, sort_keys=True), encoding="utf-8")


def key_mismatch(previous: dict[str, str], key: dict[str, str]) -> str:
    """What differs between an earlier run's key and this run's ("" = same config and data)."""
    if not previous:
        return f"it left no {RUN_KEY} (not a slmforge training run, or from a version without run keys)"
    return "; ".join(
        f"{name} {str(previous.get(name, ''))[:12] or '(none)'} there, {str(value)[:12] or '(none)'} here"
        for name, value in sorted(key.items())
        if previous.get(name, "") != value
    )


def seed_from(previous_dir: str | Path, checkpoint_dir: str | Path, key: dict[str, str]) -> int:
    """Copy the newest complete checkpoint of an earlier run (``previous_dir``) into this run's
    ``checkpoint_dir``, after checking both train the same config on the same data; returns its step.

    A checkpoint_dir that already holds a complete checkpoint (this task retried) is left as it is: its own
    checkpoints are newer than the earlier run's.
    """
    own = latest_complete(checkpoint_dir)
    if own is not None:
        return checkpoint_step(own) or 0
    source = Path(previous_dir)
    if not source.is_dir():
        raise ResumeRefused(
            f"[RESUME-002] resume_from={source}: no such folder. Fix: name the checkpoints folder of the "
            "earlier run (<run>/train-op/checkpoints), or leave resume_from empty to start from step 0"
        )
    differs = key_mismatch(read_run_key(source), key)
    if differs:
        raise ResumeRefused(
            f"[RESUME-001] {source} was trained on another config or data: {differs}. Fix: resume a run of "
            "this same config and data, or leave resume_from empty to start from step 0"
        )
    latest = latest_complete(source)
    if latest is None:
        raise ResumeRefused(
            f"[RESUME-002] {source} holds no complete checkpoint (killed before its first save?). Fix: "
            "leave resume_from empty to start from step 0"
        )
    target = Path(checkpoint_dir) / latest.name
    shutil.copytree(latest, target, dirs_exist_ok=True)
    if incomplete_reason(target):  # copied short (disk full?): never resume from a partial copy
        shutil.rmtree(target, ignore_errors=True)
        raise ResumeRefused(
            f"[RESUME-002] copying {latest} to {target} did not complete; nothing was resumed"
        )
    return checkpoint_step(latest) or 0


def prepare_checkpoints(
    checkpoint_dir: str | Path, key: dict[str, str], *, resume_from: str = "", nodes: int = 1
) -> None:
    """Before training: seed ``checkpoint_dir`` from the earlier run ``resume_from`` (if given) and record
    this run's key beside the checkpoints."""
    if resume_from:
        if nodes > 1:
            raise ResumeRefused(
                f"[RESUME-003] resume_from with train.nodes={nodes}: a multi-node run resumes only its own "
                "checkpoints (a retried task). Fix: leave resume_from empty"
            )
        step = seed_from(resume_from, checkpoint_dir, key)
        print(f"resume_from {resume_from}: its checkpoint at step {step} seeds this run", flush=True)
    write_run_key(checkpoint_dir, key)
