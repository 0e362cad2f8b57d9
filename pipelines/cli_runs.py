"""``slmforge runs list`` and ``slmforge runs compare RUN_A RUN_B [...]``: training runs side by side.

Two sources, one table:

* the MLflow store the training runs were logged to (components/train/tracking.py): ``--tracking-uri``,
  else the config's ``registry.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded sqlite
  store under ``$SLMFORGE_HOME`` (the order the train step follows). Runs tagged ``slmforge.stage=train``;
  their params, and each metric's last logged value (the final loss, tokens/s, ...).
* ``--vertex``: a Vertex AI experiment (``aiplatform.get_experiment_df``: the pipeline runs ``submit``
  associated with it, their pipeline parameters and Metrics artifacts) or, with ``--pipeline NAME``, the
  runs of one pipeline (``aiplatform.get_pipeline_df``). ``$SLMFORGE_VERTEX_ENDPOINT`` applies
  (pipelines/vertex.py).
* ``--kfp-host URL``: an experiment of a Kubeflow Pipelines backend (pipelines/kfp_backend.py): each run's
  state and pipeline parameters (its metrics are artifacts in the run, not on the run resource).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
runs_app = typer.Typer(
    no_args_is_help=True,
    help="List and compare training runs: the local MLflow store, or Vertex AI Experiments (--vertex).",
)
TRAIN_TAG = "slmforge.stage"  # components/train/tracking.py tags its runs slmforge.stage=train


@dataclass
class RunRecord:
    id: str  # MLflow run id; the run name on Vertex
    name: str
    experiment: str
    status: str
    started: str = ""  # local time, or "" when unknown
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # final values


class RunsError(ValueError):
    pass


# -- sources ------------------------------------------------------------------------------------------
def tracking_uri_for(tracking_uri: str = "", config: Path | None = None) -> str:
    """The MLflow store to read: the argument, the config's registry.tracking_uri, $MLFLOW_TRACKING_URI,
    or the embedded sqlite store."""
    from components.register.core import default_tracking_uri

    if not tracking_uri and config is not None:
        from components.common.config_load import load_config

        tracking_uri = load_config(config).registry.tracking_uri
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def _record(run, experiments: dict[str, str]) -> RunRecord:
    started = run.info.start_time
    return RunRecord(
        id=run.info.run_id,
        name=run.info.run_name or "",
        experiment=experiments.get(run.info.experiment_id, run.info.experiment_id),
        status=run.info.status,
        started=datetime.fromtimestamp(started / 1000).strftime("%Y-%m-%d %H:%M:%S") if started else "",
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),  # MLflow keeps each metric's latest value here
    )


def mlflow_runs(tracking_uri: str, experiment: str = "", limit: int = 50) -> list[RunRecord]:
    """Training runs, newest first; ``experiment`` narrows to one experiment (by name)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    ids = [i for i, name in experiments.items() if not experiment or name == experiment]
    if experiment and not ids:
        raise RunsError(
            f"no experiment {experiment!r} in {tracking_uri}; it has {sorted(experiments.values())}"
        )
    if not ids:
        return []
    runs = client.search_runs(
        ids,
        filter_string=f"tags.`{TRAIN_TAG}` = 'train'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    return [_record(run, experiments) for run in runs]


def resolve(refs: list[str], runs: list[RunRecord]) -> list[RunRecord]:
    """The runs ``refs`` name: a full id, a unique id prefix (what ``runs list`` shows) or a unique run name."""
    chosen = []
    for ref in refs:
        hits = [r for r in runs if r.id == ref] or [r for r in runs if r.id.startswith(ref) or r.name == ref]
        if len(hits) != 1:
            what = "no run" if not hits else f"{len(hits)} runs ({', '.join(r.id[:12] for r in hits)})"
            raise RunsError(
                f"{ref!r} names {what}: give a longer id prefix or the full id (`slmforge runs list`)"
            )
        chosen.append(hits[0])
    return chosen


def _value(v: Any) -> Any | None:
    """A dataframe cell as a plain value; None for a missing one (NaN)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def runs_from_dataframe(df, source: str) -> list[RunRecord]:
    """Vertex's experiment or pipeline dataframe (one row per run: ``run_name``, ``state``, ``param.<name>``,
    ``metric.<name>``, ``time_series_metric.<name>`` columns) as run records; ``source`` names the
    experiment or pipeline."""
    runs = []
    for row in df.to_dict(orient="records"):
        params, metrics = {}, {}
        for column, cell in row.items():
            value = _value(cell)
            if value is None:
                continue
            kind, _, name = str(column).partition(".")
            if kind == "param" and isinstance(value, float) and value.is_integer():
                value = int(value)  # the metadata store keeps every number as a double
            if kind == "param":
                params[name] = str(value)
            elif kind in ("metric", "time_series_metric") and isinstance(value, (int, float)):
                metrics[name] = float(value)
        name = str(row.get("run_name") or "")
        runs.append(
            RunRecord(
                id=name,
                name=name,
                experiment=str(row.get("experiment_name") or source),
                status=str(_value(row.get("state")) or ""),
                params=params,
                metrics=metrics,
            )
        )
    return runs


def vertex_runs(project: str, region: str, experiment: str = "", pipeline: str = "") -> list[RunRecord]:
    from google.cloud import aiplatform

    from components.common.vertex import vertex_init

    vertex_init(project, region)
    if pipeline:
        return runs_from_dataframe(aiplatform.get_pipeline_df(pipeline), pipeline)
    return runs_from_dataframe(aiplatform.get_experiment_df(experiment), experiment)


# -- tables -------------------------------------------------------------------------------------------
def kfp_runs(client, experiment: str, limit: int = 50) -> list[RunRecord]:
    """The runs of ``experiment`` on a Kubeflow Pipelines backend (``client``: pipelines/kfp_backend.py
    ``kfp_client``), newest first: name, state, parameters."""
    found = client.get_experiment(experiment_name=experiment)
    listed = client.list_runs(experiment_id=found.experiment_id, page_size=limit, sort_by="created_at desc")
    records = []
    for run in listed.runs or []:
        params = ((run.runtime_config.parameters or {}) if run.runtime_config else {}) or {}
        started = run.created_at.strftime("%Y-%m-%d %H:%M") if run.created_at else ""
        records.append(
            RunRecord(
                id=run.run_id,
                name=run.display_name or run.run_id,
                experiment=experiment,
                status=str(run.state or ""),
                started=started,
                params={k: str(v) for k, v in params.items()},
            )
        )
    return records


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _same(values: list[Any]) -> bool:
    """Equal values, numbers compared as numbers ("0.0002" as a param equals "2e-4")."""

    def norm(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return v

    return len({repr(norm(v)) for v in values}) == 1


def comparison_rows(runs: list[RunRecord]) -> list[tuple[str, str, list[Any], bool]]:
    """(kind, name, one value per run, differs) for every param and metric any run has; params first."""
    rows = []
    for kind, attr in (("param", "params"), ("metric", "metrics")):
        names = sorted(set().union(*(getattr(r, attr) for r in runs)))
        for name in names:
            values = [getattr(r, attr).get(name) for r in runs]
            rows.append((kind, name, values, not _same(values)))
    return rows


def compare_table(runs: list[RunRecord], only_differences: bool = False) -> Table:
    """Params and metrics side by side, one column per run; rows that differ between runs are marked ≠ and
    highlighted."""
    table = Table(title=f"{len(runs)} runs side by side (≠: differs)", show_lines=False)
    table.add_column("", width=1)
    table.add_column("kind")
    table.add_column("name")
    for run in runs:
        header = run.name if run.id == run.name else f"{run.name or '—'}\n{run.id[:8]}"
        table.add_column(header, justify="right")
    for kind, name, values, differs in comparison_rows(runs):
        if only_differences and not differs:
            continue
        table.add_row(
            "≠" if differs else "", kind, name, *map(_fmt, values), style="bold yellow" if differs else None
        )
    return table


FINAL_LOSS = ("loss", "train_loss", "final_loss")


def list_table(runs: list[RunRecord], title: str) -> Table:
    table = Table(title=title)
    for column in ("run", "name", "experiment", "status", "started", "final loss", "params", "metrics"):
        table.add_column(column, justify="right" if column in ("final loss", "params", "metrics") else "left")
    for run in runs:
        loss = next((run.metrics[k] for k in FINAL_LOSS if k in run.metrics), None)
        table.add_row(
            run.id[:8] if run.id != run.name else run.id,
            run.name,
            run.experiment,
            run.status,
            run.started,
            _fmt(loss),
            str(len(run.params)),
            str(len(run.metrics)),
        )
    return table


# -- commands -----------------------------------------------------------------------------------------
def _vertex_target(config: Path | None, project: str, region: str, experiment: str) -> tuple[str, str, str]:
    if config is not None:
        from components.common.config_load import load_config

        cfg = load_config(config)
        project = project or cfg.vertex.project
        region = region or cfg.vertex.region
        experiment = experiment or cfg.vertex.experiment or cfg.train.experiment or cfg.name
    return project, region or "us-central1", experiment


def _load_runs(
    config, tracking_uri, experiment, vertex, project, region, pipeline, limit, kfp_host="", kfp_audience=""
) -> tuple[list, str]:
    if kfp_host:
        from pipelines.kfp_backend import KfpError, kfp_client

        experiment = _vertex_target(config, "", "", experiment)[2]
        if not experiment:
            raise RunsError("--kfp-host needs --experiment, or --config (its experiment)")
        try:
            return kfp_runs(
                kfp_client(kfp_host, kfp_audience), experiment, limit
            ), f"{kfp_host} experiment {experiment}"
        except KfpError as e:
            raise RunsError(str(e)) from None
    if vertex:
        project, region, experiment = _vertex_target(config, project, region, experiment)
        if not project or not (experiment or pipeline):
            raise RunsError(
                "--vertex needs --project and --experiment (or --pipeline), or --config with vertex.project"
            )
        where = f"Vertex AI {'pipeline ' + pipeline if pipeline else 'experiment ' + experiment} ({project}, {region})"
        return vertex_runs(project, region, experiment, pipeline)[:limit], where
    uri = tracking_uri_for(tracking_uri, config)
    return mlflow_runs(uri, experiment, limit), uri


CONFIG = typer.Option(
    None, "--config", help="config YAML: its registry.tracking_uri, or its vertex section with --vertex"
)
TRACKING = typer.Option(
    "", "--tracking-uri", help="MLflow tracking URI (default: config, $MLFLOW_TRACKING_URI, embedded)"
)
EXPERIMENT = typer.Option(
    "", "--experiment", help="only this experiment (MLflow), or the Vertex AI experiment"
)
VERTEX = typer.Option(False, "--vertex", help="read Vertex AI Experiments instead of MLflow")
PROJECT = typer.Option("", "--project", help="--vertex: GCP project (default: the config's)")
REGION = typer.Option("", "--region", help="--vertex: region (default: the config's, else us-central1)")
PIPELINE = typer.Option("", "--pipeline", help="--vertex: the runs of this pipeline instead of an experiment")
KFP_HOST = typer.Option("", "--kfp-host", help="read an experiment of this Kubeflow Pipelines API instead")
KFP_AUDIENCE = typer.Option("", "--kfp-audience", help="--kfp-host: the ID token's audience (IAP client ID)")


@runs_app.command("list")
def list_cmd(
    config: Path = CONFIG,
    tracking_uri: str = TRACKING,
    experiment: str = EXPERIMENT,
    vertex: bool = VERTEX,
    project: str = PROJECT,
    region: str = REGION,
    pipeline: str = PIPELINE,
    limit: int = typer.Option(50, "--limit", help="at most this many runs, newest first"),
    kfp_host: str = KFP_HOST,
    kfp_audience: str = KFP_AUDIENCE,
) -> None:
    """List training runs, newest first: id, name, experiment, status, final loss."""
    try:
        runs, where = _load_runs(
            config, tracking_uri, experiment, vertex, project, region, pipeline, limit, kfp_host, kfp_audience
        )
    except RunsError as e:
        console.print(f"[red]{e}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    what = "runs" if vertex or kfp_host else "training runs"
    if not runs:
        console.print(f"no {what} in {where}", highlight=False, soft_wrap=True)
        return
    console.print(list_table(runs, f"{len(runs)} {what} in {where}"))


@runs_app.command("compare")
def compare_cmd(
    runs: list[str] = typer.Argument(..., help="two or more runs: id, id prefix (from `runs list`) or name"),
    only_differences: bool = typer.Option(False, "--diff", help="only the rows that differ"),
    config: Path = CONFIG,
    tracking_uri: str = TRACKING,
    experiment: str = EXPERIMENT,
    vertex: bool = VERTEX,
    project: str = PROJECT,
    region: str = REGION,
    pipeline: str = PIPELINE,
    kfp_host: str = KFP_HOST,
    kfp_audience: str = KFP_AUDIENCE,
) -> None:
    """Compare runs: every param and final metric side by side, the rows that differ marked ≠ and highlighted."""
    if len(runs) < 2:
        console.print("[red]compare needs two or more runs[/red]")
        raise typer.Exit(2)
    try:
        found, _ = _load_runs(
            config,
            tracking_uri,
            experiment,
            vertex,
            project,
            region,
            pipeline,
            10_000,
            kfp_host,
            kfp_audience,
        )
        chosen = resolve(runs, found)
    except RunsError as e:
        console.print(f"[red]{e}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(compare_table(chosen, only_differences))
