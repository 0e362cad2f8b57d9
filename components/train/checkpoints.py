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
