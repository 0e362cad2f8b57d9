"""export: turn the gated candidate into the artifact that is served, and prove it answers the same.

1. Merge: a LoRA adapter is folded into its base weights (``merge_and_unload``); a full fine-tune is
   copied as is. The result is a plain Hugging Face folder: ``model.safetensors``, tokenizer, generation
   config, ``slmforge_model.json``. Pickle weights (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``)
   are refused on the way in and never written: loading them runs arbitrary code.
2. Custom model code: a base whose ``config.json`` has an ``auto_map`` runs code from its repository.
   That is refused unless ``model.trust_remote_code`` allow-lists the base id with a pinned commit; the
   pinned revision is then what is loaded.
3. Parity: the exported folder is evaluated by the same code as the candidate (same rows, template,
   decoding, scorer) and the step fails when a gated metric drops by more than ``tolerance`` against the
   adapter's evaluation. A merged model is never registered unevaluated.
4. Quantized variants (``export.quantize``: ``nf4``, ``int8``) are written with bitsandbytes under
   ``quantized/<kind>/`` (transformers' own serialization of bitsandbytes weights, which vLLM reads as a
   pre-quantized checkpoint: docs.vllm.ai "BitsAndBytes", 8-bit since vllm-project/vllm#7445) and each is
   evaluated and parity-checked the same way, against ``export.quantized_tolerance``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.common.models import (
    NO_REMOTE_CODE,
    SAFE_WEIGHTS,
    pickle_files,
    read_model_info,
    resolve_base,
    write_model_info,
)


class ExportError(RuntimeError):
    """The model cannot be exported safely, or the exported model does not answer like the candidate."""


QUANTIZED = "quantized"  # subfolder of the export holding quantized variants, one folder per kind
QUANT_KINDS = ("nf4", "int8")


@dataclass
class Variant:
    kind: str  # nf4 | int8
    metrics: dict[str, float]
    parity: list[dict[str, Any]]
    changed_answers: int


@dataclass
class ExportResult:
    kind: str  # what was exported: merged (LoRA folded in) or full
    base_model: str
    files: list[str]  # files of the exported folder
    metrics: dict[str, float]  # the exported model's evaluation
    parity: list[dict[str, Any]]  # one row per gated metric: adapter, exported, drop, within tolerance
    changed_answers: int  # eval rows whose answer differs between adapter and exported model
    settings: dict[str, Any] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)  # quantized variants, each evaluated


def refuse_pickle(folder: str | Path) -> None:
    """Raise when ``folder`` holds pickle weights (loading them executes code)."""
    found = pickle_files(folder)
    if found:
        raise ExportError(
            f"[EXPORT-001] {folder} holds pickle weights ({', '.join(found[:5])}): they run code when loaded. "
            "Fix: convert the checkpoint to safetensors (save_pretrained(..., safe_serialization=True))"
        )


def remote_code(base_dir: str | Path, base_id: str, allow: dict[str, str]) -> dict[str, Any]:
    """The from_pretrained arguments for custom model code: none when the base needs none; the pinned
    revision with ``trust_remote_code`` when ``base_id`` is allow-listed; else an error."""
    config = Path(base_dir) / "config.json"
    needs_code = config.is_file() and "auto_map" in json.loads(config.read_text(encoding="utf-8"))
    if not needs_code:
        return {}
    if base_id not in allow:
        raise ExportError(
            f"[EXPORT-002] {base_id} ships its own model code (config.json auto_map) and is not allow-listed. "
            f"Fix: review the code, then add `{base_id}: <commit sha>` to model.trust_remote_code"
        )
    return {"trust_remote_code": True, "revision": allow[base_id]}


def _load_base(base_model: str, allow: dict[str, str]):
    from transformers import AutoModelForCausalLM

    path = resolve_base(base_model)
    if Path(path).is_dir():
        refuse_pickle(path)
    extra = remote_code(path, base_model, allow) if Path(path).is_dir() else {}
    return AutoModelForCausalLM.from_pretrained(path, **{**SAFE_WEIGHTS, **extra})


def merge(model_dir: str | Path, out_dir: str | Path, allow_remote_code: dict[str, str] | None = None) -> str:
    """Write ``model_dir`` (a trained Model folder: LoRA adapter or full weights) as one safetensors
    model folder in ``out_dir``; return the kind exported (merged | full)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    allow = allow_remote_code or {}
    refuse_pickle(model_dir)
    info = read_model_info(model_dir)
    if info["kind"] in ("lora", "qlora"):
        from peft import PeftModel

        base = _load_base(info["base_model"], allow)
        model = PeftModel.from_pretrained(base, str(model_dir), use_safetensors=True).merge_and_unload()
        kind = "merged"
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **SAFE_WEIGHTS)
        kind = "full"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)  # weights, config.json, generation_config.json
    AutoTokenizer.from_pretrained(str(model_dir), **NO_REMOTE_CODE).save_pretrained(out)
    recipe = {k: v for k, v in info.items() if k not in ("kind", "base_model")}
    write_model_info(out, kind="full", base_model=info["base_model"], exported_from=info["kind"], **recipe)
    refuse_pickle(out)
    return kind


def quantize(merged_dir: str | Path, out_dir: str | Path, kind: str) -> None:
    """Write a bitsandbytes-quantized copy of the merged model folder (weights, tokenizer, model info)."""
    import importlib.util

    if kind not in QUANT_KINDS:
        raise ExportError(f"[EXPORT-004] export.quantize: {kind!r} is not one of {', '.join(QUANT_KINDS)}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ExportError(
            f"[EXPORT-004] export.quantize: {kind} needs bitsandbytes. Fix: pip install 'slmforge[gpu]' "
            "(the trainer image has it), or drop the variant"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    config = (
        BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32,
        )
        if kind == "nf4"
        else BitsAndBytesConfig(load_in_8bit=True)
    )
    model = AutoModelForCausalLM.from_pretrained(str(merged_dir), quantization_config=config, **SAFE_WEIGHTS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(merged_dir), **NO_REMOTE_CODE).save_pretrained(out)
    info = read_model_info(merged_dir)
    write_model_info(out, **{**info, "quantized": kind})


def gated_metrics(rules: list[dict], task_metrics: dict[str, float], headline: tuple[str, ...]) -> list[str]:
    """The metrics parity is checked on: those the gate rules name, else the task's headline metrics."""
    named = [r["metric"] for r in rules if r.get("metric") in task_metrics]
    if named:
        return sorted(set(named))
    return [m for m in headline if m in task_metrics]


def check_parity(
    adapter: dict[str, float], exported: dict[str, float], metrics: list[str], tolerance: float
) -> list[dict[str, Any]]:
    """Compare the exported model's metrics with the adapter's; a drop above ``tolerance`` fails."""
    rows = []
    for m in metrics:
        before, after = float(adapter[m]), float(exported.get(m, float("nan")))
        drop = before - after
        rows.append(
            {"metric": m, "adapter": before, "exported": after, "drop": drop, "ok": drop <= tolerance}
        )
    return rows


def parity_markdown(
    rows: list[dict[str, Any]], tolerance: float, changed: int, examples: int, what: str = "Exported model"
) -> str:
    lines = [
        (
            f"{what} vs the adapter's evaluation (tolerance {tolerance:g}; {changed} of {examples} answers "
            "differ):"
        ),
        "",
        "| metric | adapter | exported | drop | within tolerance |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['metric']} | {r['adapter']:.4f} | {r['exported']:.4f} | {r['drop']:+.4f} | {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def changed_answers(adapter_predictions: str | Path, exported_predictions: str | Path) -> int:
    import pyarrow.parquet as pq

    before = pq.read_table(str(adapter_predictions), columns=["predicted"])["predicted"].to_pylist()
    after = pq.read_table(str(exported_predictions), columns=["predicted"])["predicted"].to_pylist()
    if len(before) != len(after):
        raise ExportError(f"adapter answered {len(before)} eval rows, the exported model {len(after)}")
    return sum(a != b for a, b in zip(before, after, strict=True))


def export(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    eval_path: str | Path,
    system_prompt: str,
    task,  # components.common.scoring.TaskSpec
    adapter_metrics: dict[str, float],
    adapter_predictions: str | Path,
    adapter_settings: dict[str, Any],
    predictions_path: str | Path,
    rules: list[dict],
    tolerance: float = 0.01,
    decoding: str = "free",
    max_new_tokens: int = 128,
    batch_size: int = 64,
    max_examples: int = -1,
    allow_remote_code: dict[str, str] | None = None,
    quantize_kinds: list[str] = (),
    quantized_tolerance: float = 0.05,
) -> ExportResult:
    """Merge, evaluate the exported folder like the adapter was, and fail on a metric drop; the same for
    each quantized variant in ``quantize_kinds`` (against ``quantized_tolerance``)."""
    import tempfile

    from components.common.task import METRICS
    from components.evaluate.core import evaluate

    kind = merge(model_dir, out_dir, allow_remote_code)
    checked = gated_metrics(rules, adapter_metrics, METRICS[task.type])
    options = dict(
        max_new_tokens=max_new_tokens, batch_size=batch_size, max_examples=max_examples, decoding=decoding
    )

    def evaluate_against_adapter(folder: Path, predictions: Path, limit: float, what: str):
        result = evaluate(str(folder), eval_path, system_prompt, task, predictions, **options)
        # Same rows, task, template and decoding as the adapter's evaluation, or the comparison means nothing.
        differing = {
            k: (adapter_settings.get(k), v)
            for k, v in result.settings.items()
            if adapter_settings.get(k) != v
        }
        if differing:
            raise ExportError(f"the {what} was evaluated with other settings than the adapter: {differing}")
        parity = check_parity(adapter_metrics, result.metrics, checked, limit)
        changed = changed_answers(adapter_predictions, predictions)
        failed = [r for r in parity if not r["ok"]]
        if failed:
            detail = "; ".join(f"{r['metric']} {r['adapter']:.4f} -> {r['exported']:.4f}" for r in failed)
            raise ExportError(
                f"[EXPORT-003] the {what} scores below the adapter beyond tolerance {limit:g}: {detail} "
                f"({changed} of {result.examples} answers changed). Fix: check the export (dtype, adapter "
                "config, quantization) before registering; raise the tolerance only if the drop is understood"
            )
        return result, parity, changed

    result, parity, changed = evaluate_against_adapter(
        Path(out_dir), Path(predictions_path), tolerance, "exported model"
    )
    variants = []
    for q in quantize_kinds:
        folder = Path(out_dir) / QUANTIZED / q
        quantize(out_dir, folder, q)
        with tempfile.TemporaryDirectory() as tmp:
            q_result, q_parity, q_changed = evaluate_against_adapter(
                folder, Path(tmp) / "predictions.parquet", quantized_tolerance, f"{q} variant"
            )
        variants.append(Variant(q, q_result.metrics, q_parity, q_changed))
    files = sorted(p.relative_to(out_dir).as_posix() for p in Path(out_dir).rglob("*") if p.is_file())
    return ExportResult(
        kind,
        read_model_info(out_dir)["base_model"],
        files,
        result.metrics,
        parity,
        changed,
        result.settings,
        variants,
    )


def _ref(artifact) -> dict[str, Any]:
    return {"sha256": artifact.metadata.get("sha256", ""), "uri": getattr(artifact, "uri", "")}


def export_to_outputs(
    model,
    eval_data,
    train_data,
    split_card,
    candidate_metrics,
    candidate_predictions,
    gate_report,
    *,
    task_parts: tuple[str, str, str],
    system_prompt: str,
    eval_options: dict[str, Any],
    rules: list[dict],
    tolerance: float,
    trust_remote_code: dict[str, str],
    quantize: list[str] = (),
    quantized_tolerance: float = 0.05,
    model_name: str,
    config_hash: str,
    exported,
    hardware: str = "",
    metrics,
    predictions,
    card,
) -> ExportResult:
    """``export`` from a component's inputs onto its outputs: the exported folder with its card and
    lineage, the exported model's metrics and predictions, the card as a Markdown artifact."""
    from components.common.provenance import stamp
    from components.common.scoring import TaskSpec
    from components.evaluate.core import EvalResult, record
    from components.export.card import CARD, model_card, weights_hash, write_lineage

    adapter_metrics = {
        k: float(v) for k, v in candidate_metrics.metadata.items() if isinstance(v, (int, float))
    }
    result = export(
        model.path,
        exported.path,
        eval_path=eval_data.path,
        system_prompt=system_prompt,
        task=TaskSpec.from_parts(*task_parts),
        adapter_metrics=adapter_metrics,
        adapter_predictions=candidate_predictions.path,
        adapter_settings=candidate_predictions.metadata["settings"],
        predictions_path=predictions.path,
        rules=rules,
        tolerance=tolerance,
        allow_remote_code=trust_remote_code,
        quantize_kinds=list(quantize),
        quantized_tolerance=quantized_tolerance,
        **eval_options,
    )
    weights = weights_hash(exported.path)
    record(
        EvalResult(result.metrics, int(result.metrics.get("examples", 0)), 0.0, result.settings),
        metrics,
        predictions,
        model_label="exported",
        config_hash=config_hash,
        upstream={"model": weights},
    )
    manifest = json.loads((Path(split_card.path) / "manifest.json").read_text(encoding="utf-8"))
    lineage = {
        # the source files as read (one hash per locator), not the cleaned table split received
        "data": {
            "sha256": ", ".join(s["sha256"] for s in manifest.get("sources", [])),
            "uri": ", ".join(s["locator"] or s["source"] for s in manifest.get("sources", [])),
        },
        "split_train": _ref(train_data),
        "split_eval": _ref(eval_data),
        "adapter": _ref(model),
        "merged": {"sha256": weights, "uri": getattr(exported, "uri", "")},
        "eval_adapter": _ref(candidate_predictions),
        "eval_exported": _ref(predictions),
    }
    write_lineage(exported.path, lineage)
    text = model_card(
        name=model_name,
        task_type=task_parts[0],
        base_model=result.base_model,
        model_info=read_model_info(exported.path),
        manifest=manifest,
        gate_report=Path(gate_report.path).read_text(encoding="utf-8"),
        parity=parity_markdown(
            result.parity, tolerance, result.changed_answers, int(result.metrics["examples"])
        )
        + "".join(
            "\n"
            + parity_markdown(
                v.parity,
                quantized_tolerance,
                v.changed_answers,
                int(v.metrics["examples"]),
                f"Variant `{QUANTIZED}/{v.kind}/` (bitsandbytes)",
            )
            for v in result.variants
        ),
        lineage=lineage,
        config_hash=config_hash,
    )
    Path(exported.path, CARD).write_text(text, encoding="utf-8")
    Path(card.path).parent.mkdir(parents=True, exist_ok=True)
    Path(card.path).write_text(text, encoding="utf-8")
    stamp(
        exported.metadata,
        exported.path,
        config_hash=config_hash,
        upstream={"adapter": lineage["adapter"]["sha256"]},
    )
    exported.metadata.update(
        {
            "weights_sha256": weights,
            "lineage": lineage,
            "base_model": result.base_model,
            "kind": result.kind,
            "changed_answers": result.changed_answers,
            "parity": result.parity,
            "parity_evaluated_on": hardware,
            "variants": [asdict(v) for v in result.variants],
        }
    )
    return result
