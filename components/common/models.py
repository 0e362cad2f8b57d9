"""Resolve and load models: base checkpoints (tiny://, hub id, local dir, gs://) and trained artifacts.

A trained ``Model`` artifact folder holds either full weights or a LoRA adapter, always with the
tokenizer, plus ``slmforge_model.json`` saying which and from what base, so any stage loads it the
same way (``load_for_inference``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.common.home import slmforge_home
from components.common.tiny import TINY_PREFIX, ensure_tiny_model

MODEL_INFO = "slmforge_model.json"


def module_names(comma_separated: str) -> list[str]:
    """A pipeline parameter like "q_proj, v_proj" as a list of module names ("" = none)."""
    return [name.strip() for name in comma_separated.split(",") if name.strip()]


# Weights in these files are pickles: loading one runs code. Models load from safetensors only.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Every from_pretrained here passes these: transformers never asks on stdin whether to run a model's own
# code (an interactive "[y/N]" must not decide), and never falls back to pickle weights.
NO_REMOTE_CODE = {"trust_remote_code": False}
SAFE_WEIGHTS = {**NO_REMOTE_CODE, "use_safetensors": True}


class UnsafeModelError(ValueError):
    """A model folder that would run code when loaded (pickle weights, its own model code)."""


def pickle_files(folder: str | Path) -> list[str]:
    """Files under ``folder`` whose suffix marks pickle weights (relative paths, sorted)."""
    root = Path(folder)
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix in PICKLE_SUFFIXES
    )


def check_loadable(path: str | Path) -> None:
    """Refuse, before any load, a local model folder whose weights exist only as pickles (MODEL-005) or
    whose config asks to run its own code (MODEL-006); a hub id is checked by transformers itself
    (``trust_remote_code=False``, ``use_safetensors=True``)."""
    folder = Path(path)
    if not folder.is_dir():
        return
    files = [p.name for p in folder.iterdir() if p.is_file()]
    weights = [n for n in files if n.endswith(".safetensors")]
    pickles = [n for n in files if n.endswith(PICKLE_SUFFIXES) and n != "training_args.bin"]
    if pickles and not weights:
        raise UnsafeModelError(
            f"[MODEL-005] {folder} holds weights only as pickles ({', '.join(sorted(pickles)[:5])}): loading "
            "them runs code. Fix: convert the checkpoint to safetensors (save_pretrained(..., "
            "safe_serialization=True)) where you trust it"
        )
    config = folder / "config.json"
    if config.is_file() and "auto_map" in json.loads(config.read_text(encoding="utf-8")):
        raise UnsafeModelError(
            f"[MODEL-006] {folder} ships its own model code (config.json auto_map), which training and "
            "evaluation do not run. Fix: use a model that transformers supports natively"
        )


def resolve_base(base: str) -> str:
    """Turn ``model.base`` into something ``from_pretrained`` takes: a local folder or a hub id."""
    if base.startswith(TINY_PREFIX):
        return str(ensure_tiny_model(base))
    if base.startswith("gs://"):
        return str(download_gcs_dir(base, slmforge_home() / "models" / "gcs"))
    return base  # a local folder or a hub id: transformers handles both


def download_gcs_dir(uri: str, cache: Path) -> Path:
    """Copy every object under a gs:// prefix to a local folder (once) and return that folder."""
    from components.common.gcs import download_prefix, split_uri

    bucket_name, name = split_uri(uri)
    target = cache / bucket_name / name.rstrip("/")
    if (target / "config.json").is_file():
        return target
    try:
        return download_prefix(uri, target)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; model.base must be a folder of a checkpoint") from None


def write_model_info(model_dir: str | Path, *, kind: str, base_model: str, **extra: Any) -> None:
    info = {"kind": kind, "base_model": base_model, **extra}
    (Path(model_dir) / MODEL_INFO).write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")


def read_model_info(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MODEL_INFO
    if not path.is_file():  # a plain checkpoint folder
        return {"kind": "full", "base_model": str(model_dir)}
    return json.loads(path.read_text(encoding="utf-8"))


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    check_loadable(path)
    tok = AutoTokenizer.from_pretrained(path, **NO_REMOTE_CODE)
    if tok.pad_token is None:  # many base checkpoints ship none; eos would also be masked out of the loss
        raise ValueError(
            f"{path}: the tokenizer has no pad token; add one (distinct from eos) before training"
        )
    return tok


def load_for_inference(source: str, dtype=None):
    """Load (model, tokenizer) from a base locator or a trained Model artifact folder, in eval mode;
    ``dtype``: the weights' compute dtype (None = transformers' default, float32)."""
    from transformers import AutoModelForCausalLM

    load = {**SAFE_WEIGHTS, **({"dtype": dtype} if dtype is not None else {})}

    local = Path(source)
    if local.is_dir() and (local / MODEL_INFO).is_file():
        info = read_model_info(local)
        tokenizer = load_tokenizer(str(local))
        if info["kind"] == "lora":
            from peft import PeftModel

            base_path = resolve_base(info["base_model"])
            check_loadable(base_path)
            base = AutoModelForCausalLM.from_pretrained(base_path, **load)
            model = PeftModel.from_pretrained(base, str(local), use_safetensors=True)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(local), **load)
    else:
        path = resolve_base(source)
        tokenizer = load_tokenizer(path)  # checks the folder first
        model = AutoModelForCausalLM.from_pretrained(path, **load)
    model.eval()
    return model, tokenizer
