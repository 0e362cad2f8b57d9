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

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:  # many base checkpoints ship none; eos would also be masked out of the loss
        raise ValueError(
            f"{path}: the tokenizer has no pad token; add one (distinct from eos) before training"
        )
    return tok


def load_for_inference(source: str):
    """Load (model, tokenizer) from a base locator or a trained Model artifact folder, in eval mode."""
    from transformers import AutoModelForCausalLM

    local = Path(source)
    if local.is_dir() and (local / MODEL_INFO).is_file():
        info = read_model_info(local)
        tokenizer = load_tokenizer(str(local))
        if info["kind"] == "lora":
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(resolve_base(info["base_model"]))
            model = PeftModel.from_pretrained(base, str(local))
        else:
            model = AutoModelForCausalLM.from_pretrained(str(local))
    else:
        path = resolve_base(source)
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    return model, tokenizer
