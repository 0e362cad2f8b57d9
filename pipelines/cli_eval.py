"""``slmforge eval``: evaluation alone, outside a pipeline, with the pipeline's code and the same report."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer
from rich.console import Console

console = Console()


def eval_cmd(
    config: Path = typer.Argument(..., help="config YAML"),
    model: str = typer.Option(
        ..., "--model", help="candidate: a Model folder, models:/NAME/VERSION, gs:// or hub id"
    ),
    baseline: str = typer.Option(
        None, "--baseline", help="the 'base' baseline; default: the config's model.base"
    ),
    out: Path = typer.Option(
        Path("eval-report"), "--out", help="folder for report.html, divergences, predictions"
    ),
    decoding: str = typer.Option(
        None, "--decoding", help="free | constrained | both; default: eval.decoding"
    ),
    max_examples: int = typer.Option(None, "--max-examples", help="evaluate at most this many rows"),
) -> None:
    """Evaluate a model on the config's eval split against the base model, the retrieval baseline and the
    registry's champion (when there is one), apply the gate rules and write the HTML report."""
    from components.common.config import registry_spec
    from components.common.scoring import TaskSpec
    from components.evaluate.core import evaluate
    from components.evaluate.retrieval import evaluate_retrieval
    from components.gate.core import judge, report_markdown
    from components.register.core import download_alias, model_source, registry_from_spec
    from pipelines.cli_common import _load
    from pipelines.cli_data import prepare_splits
    from pipelines.parameters import pipeline_parameters

    cfg = _load(config)
    params = pipeline_parameters(cfg)
    task = TaskSpec(cfg.task.type, cfg.task.output_schema, list(cfg.task.labels))
    decoding = decoding or cfg.eval.decoding
    limit = cfg.eval.max_examples if max_examples is None else max_examples
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="slmforge-eval-") as tmp:
        work = Path(tmp)
        train_path, eval_path = prepare_splits(cfg, work / "data")
        gen = dict(
            max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
            max_examples=limit,
            decoding=decoding,
        )
        scored = {}
        registry = registry_from_spec(registry_spec(cfg))
        sources = {
            "candidate": model_source(model, registry, work),
            "base": model_source(baseline or cfg.model.base, registry, work),
        }
        champion = download_alias(registry, params["model_name"], "champion", work / "champion")
        if champion is not None:
            sources["champion"] = str(champion[1])
        for name, source in sources.items():
            console.print(f"evaluating {name}: {source}")
            result = evaluate(source, eval_path, cfg.task.system_prompt, task, out / f"{name}.parquet", **gen)
            scored[name] = {
                "metrics": result.metrics,
                "predictions": out / f"{name}.parquet",
                "settings": result.settings,
                "confusion": result.scored.confusion if result.scored else None,
            }
        result = evaluate_retrieval(
            train_path, eval_path, cfg.task.system_prompt, task, out / "retrieval.parquet", max_examples=limit
        )
        scored["retrieval"] = {
            "metrics": result.metrics,
            "predictions": out / "retrieval.parquet",
            "settings": result.settings,
        }
        candidate = scored.pop("candidate")
        gate = judge(
            candidate,
            scored,
            task_type=cfg.task.type,
            rules=json.loads(params["gate_rules"]),
            bootstrap=json.loads(params["gate_bootstrap"]),
            html_path=out / "report.html",
            divergences_path=out / "divergences.parquet",
            title=f"{cfg.name}: {model}",
        )
    (out / "gate.md").write_text(report_markdown(gate), encoding="utf-8")
    (out / "metrics.json").write_text(
        json.dumps(
            {"candidate": candidate["metrics"], **{k: v["metrics"] for k, v in scored.items()}}, indent=1
        )
    )
    for line in gate.reasons.splitlines():
        console.print(line, highlight=False)
    console.print(f"gate {'PASSED' if gate.passed else 'FAILED'}; report: {out / 'report.html'}")
