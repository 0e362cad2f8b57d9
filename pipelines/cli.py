"""The ``slmforge`` command line (and ``submit``, its Vertex shortcut)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli_common import SET_OPTION, _load, _refuse, console
from pipelines.cli_data import data_app, data_options
from pipelines.cli_deploy import deploy_cmd, drift_check_cmd
from pipelines.cli_eval import eval_cmd
from pipelines.cli_registry import lineage_cmd, promote_cmd, rollback_cmd
from pipelines.cli_runs import runs_app
from pipelines.cli_serve import serve_cmd

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Fine-tune small language models with KFP."
)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")
app.command(name="eval")(eval_cmd)
app.command(name="promote")(promote_cmd)
app.command(name="rollback")(rollback_cmd)
app.command(name="lineage")(lineage_cmd)
app.command(name="serve")(serve_cmd)
app.command(name="deploy")(deploy_cmd)
app.command(name="drift-check")(drift_check_cmd)
# `slmforge run` exit codes: 0 gate passed, 1 a step failed, 2 bad usage or config, 3 the gate failed.
GATE_FAILED_EXIT = 3
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "travel" / "config.yaml"


def _metrics_table(candidate: dict, baselines: dict[str, dict]) -> Table:
    """The candidate beside every baseline the run scored (base, retrieval, champion), metric by metric."""
    table = Table(title="Evaluation on the held-out split")
    table.add_column("metric")
    table.add_column("candidate", justify="right")
    titles = {"base": "base (untrained)"}
    for name in baselines:
        table.add_column(titles.get(name, name), justify="right")
    names = [k for k in candidate if isinstance(candidate[k], (int, float))]
    for name in sorted(names, key=lambda n: (n.startswith("field_match/"), n)):
        fmt = (lambda v: f"{v:.0f}") if name == "examples" else (lambda v: f"{v:.3f}")
        cells = [fmt(b[name]) if isinstance(b.get(name), (int, float)) else "" for b in baselines.values()]
        table.add_row(name, fmt(candidate[name]), *cells)
    return table


@app.command()
def validate(
    config: Path = typer.Argument(..., help="config YAML"), overrides: list[str] = SET_OPTION
) -> None:
    """Validate a config; print the pipeline parameters it flattens into."""
    from pipelines.parameters import pipeline_parameters

    params = pipeline_parameters(_load(config, overrides))
    shown = {k: (v if len(str(v)) < 80 else str(v)[:77] + "...") for k, v in params.items()}
    console.print_json(json.dumps(shown))
    console.print(f"[green]{config}: valid[/green]")


@app.command()
def run(
    config: Path = typer.Argument(..., help="config YAML"),
    local: bool = typer.Option(False, "--local", help="run here through kfp.local (required for now)"),
    runner: str = typer.Option("subprocess", help="subprocess, or docker (images from images/)"),
    runs_root: Path = typer.Option(None, help="where local runs are written (default: $SLMFORGE_HOME/runs)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="stream every task's log"),
    overrides: list[str] = SET_OPTION,
    resume: str = typer.Option(
        None,
        "--resume",
        metavar="RUN",
        help="continue the training of an earlier, stopped run of this config (its folder under runs_root)",
    ),
) -> None:
    """Run the finetune pipeline on a config; write summary.json beside the run's artifacts.

    Exits 0 when the gate passed, 1 when a step failed, 2 on a bad config, 3 when the gate failed."""
    from components.common.home import slmforge_home
    from components.register.core import default_tracking_uri
    from pipelines.local import DockerUnavailable, run_pipeline_local
    from pipelines.parameters import pipeline_parameters

    if not local:
        console.print("To run on Vertex AI: `python compile.py && submit CONFIG`. To run here: add --local.")
        raise typer.Exit(2)
    cfg = _load(config, overrides)
    os.environ["SLMFORGE_HOME"] = str(slmforge_home())  # absolute, inherited by every task subprocess
    params = pipeline_parameters(cfg)
    root = runs_root or slmforge_home() / "runs"
    # Bound to the terminal now: while the pipeline runs, sys.stdout is redirected into its log file.
    term = Console(file=sys.stdout)
    term.print(
        f"[bold]slmforge[/bold] {cfg.name}: base {cfg.model.base}, method {cfg.model.method}, "
        f"{cfg.train.max_steps} steps — local runner: {runner}"
    )
    params["resume_from"] = _resume_from(root, resume, params["config_hash"], term)
    with term.status("starting the pipeline...") as status:

        def on_event(task: str, state: str) -> None:
            if state == "running":
                status.update(f"running [cyan]{task}[/cyan] ...")
            elif state.startswith("progress "):
                status.update(f"running [cyan]{task}[/cyan]: {state.removeprefix('progress ')}")
            else:
                mark = "[green]✓[/green]" if state == "success" else "[red]✗[/red]"
                term.print(f"  {mark} {task}")

        try:
            result = run_pipeline_local(params, root, runner=runner, on_event=on_event, echo=verbose)
        except DockerUnavailable as e:  # nothing ran: say how to get an engine or the images, no log
            term.print(str(e), style="red", markup=False, highlight=False)
            raise typer.Exit(2) from None
        except Exception as e:  # a task failed (or the run could not start): show where to look
            from pipelines.local import failure_lines

            term.print(f"pipeline failed: {e}", style="red", markup=False, highlight=False)
            logs = sorted(Path(root).glob("*/pipeline.log"))
            if logs:
                error, tail = failure_lines(logs[-1].read_text(encoding="utf-8", errors="replace"))
                term.print("\n".join(tail), markup=False, highlight=False)
                if error:  # the failing step's own error, last, where the eye lands
                    term.print(error, style="bold red", markup=False, highlight=False)
                term.print(f"full log: {logs[-1]}")
            raise typer.Exit(1) from None
    term.print(_metrics_table(result.candidate_metrics, result.baselines or {"base": result.base_metrics}))
    verdict = "[green]PASSED[/green]" if result.gate_passed else "[red]FAILED[/red]"
    term.print(f"gate: {verdict}")
    term.print(result.gate_reasons, markup=False, highlight=False)
    if result.registered:
        term.print(
            f"registered: [bold]{result.registered['model_uri']}[/bold] (alias candidate) "
            f"in {params['tracking_uri'] or default_tracking_uri()}"
        )
    else:
        term.print("not registered: the gate did not pass")
    term.print(
        f"report: {result.run_dir / 'report.html'} (candidate vs baselines, CIs; open it in a browser)"
    )
    term.print(f"artifacts: {result.run_dir}   ({result.seconds:.0f} s)")
    term.print(f"summary: {result.run_dir / 'summary.json'}")
    if not result.gate_passed:  # the run worked, its model did not pass: a code of its own, for CI
        raise typer.Exit(GATE_FAILED_EXIT)


def _resume_from(root: Path, resume: str | None, config_hash: str, term: Console) -> str:
    """The ``resume_from`` of this run (a checkpoints folder, or ""), and say on the terminal which it is:
    the run named by --resume, or from step 0 (naming a stopped run of this config that could be resumed)."""
    from pipelines.local import leftovers

    if resume:
        found = leftovers(root, resume)
        if not found:
            raise _refuse(
                f"[RESUME-002] --resume {resume}: no complete training checkpoint under {root / resume} "
                f"(a run folder under {root}). Fix: name a run that was stopped during training, or drop "
                "--resume to start from step 0",
                term,
            )
        leftover = found[0]
        if leftover.key.get("config_hash") != config_hash:
            raise _refuse(
                f"[RESUME-001] --resume {resume}: that run trained another config "
                f"({str(leftover.key.get('config_hash', 'unknown'))[:12]}, this one {config_hash[:12]}). "
                "Fix: resume it with its own config, or drop --resume to start from step 0",
                term,
            )
        term.print(
            f"resuming run {leftover.run}: training continues from its checkpoint at step {leftover.step}"
        )
        return str(leftover.checkpoints)
    same = [lo for lo in leftovers(root) if lo.key.get("config_hash") == config_hash]
    if same:
        term.print(
            f"run {same[0].run} of this config stopped with a checkpoint at step {same[0].step}; "
            f"`--resume {same[0].run}` continues it. Starting from step 0."
        )
    return ""


@app.command()
def demo(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="stream every task's log"),
    overrides: list[str] = SET_OPTION,
) -> None:
    """Run the travel demo end to end, offline, on the tiny://travel model."""
    run(
        DEMO_CONFIG,
        local=True,
        runner="subprocess",
        runs_root=None,
        verbose=verbose,
        overrides=overrides,
        resume=None,
    )


@app.command(name="preflight")
def preflight_cmd(
    config: Path = typer.Argument(..., help="config YAML"),
    table: Path = typer.Option(
        None, help="canonical table to check (from `data map --commit`); default: data.train"
    ),
    method: str = typer.Option(None, help="full, lora or qlora; default: model.method"),
    accelerator: str = typer.Option(None, help="Vertex accelerator type; default: vertex.accelerator_type"),
    count: int = typer.Option(None, help="accelerators; default: vertex.accelerator_count"),
    strict: bool = typer.Option(
        None, "--strict/--no-strict", help="exit 1 on an error; default: preflight.strict"
    ),
    tokens_per_s: float = typer.Option(0.0, help="measured training tokens/s (0 = assumed)"),
    usd_per_hour: float = typer.Option(0.0, help="machine price in USD/h (0 = the price table)"),
    out: Path = typer.Option(None, help="also write report.md and plan.json to this folder"),
) -> None:
    """Memory fit, cost and template/data checks on CPU, before any GPU is asked for."""
    import tempfile

    from rich.markdown import Markdown

    from components.ingest.core import ingest
    from components.preflight.core import PreflightFailed, check_strict, preflight
    from components.preflight.options import PreflightOptions
    from components.preflight.report import report_markdown, write_outputs
    from pipelines.parameters import stage_options

    cfg = _load(config)
    asked = {
        "method": method,
        "accelerator_type": accelerator,
        "accelerator_count": count,
        "strict": strict,
    }
    # the preflight step's options as a pipeline run builds them, with this command's overrides
    opts = stage_options(
        PreflightOptions,
        "preflight",
        cfg,
        **{k: v for k, v in asked.items() if v is not None},
        tokens_per_s=tokens_per_s,
        usd_per_hour=usd_per_hour,
    )
    with tempfile.TemporaryDirectory() as tmp:
        if table is None:  # ingest only (no clean): rows clean would drop are still checked
            d, table = cfg.data, Path(tmp) / "train.parquet"
            ingest_opts = data_options(cfg)[0]  # the run's own ingest options
            ingest(d.train, "", ingest_opts, table, Path(tmp) / "rejects.jsonl")
        try:
            result = preflight(table, cfg.model.base, cfg.task.system_prompt, opts)
        except ValueError as e:
            console.print(f"[red]{e}[/red]", highlight=False)
            raise typer.Exit(2) from None
    console.print(Markdown(report_markdown(result)))
    if out:
        write_outputs(result, out / "report.md", out / "plan.json")
    try:
        check_strict(result)
    except PreflightFailed as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        raise typer.Exit(1) from None


@app.command(name="compile")
def compile_cmd(
    out: Path = typer.Option(None, help="output folder (default: build/pipelines[/kfp])"),
    target: str = typer.Option("vertex", "--target", help="vertex, or kfp: Kubeflow Pipelines on GKE"),
) -> None:
    """Compile every pipeline to YAML (same as python compile.py)."""
    from pipelines.compiler import compile_all

    for path in compile_all(out, target=target):
        console.print(str(path))


@app.command()
def submit(
    config: Path = typer.Argument(..., help="config YAML"),
    pipeline: str = typer.Option(
        "finetune", help="finetune (finetune-multinode when train.nodes > 1), or evaluate (needs --model)"
    ),
    model: str = typer.Option(
        "", "--model", help="evaluate: the model, models:/NAME/VERSION, models:/NAME@ALIAS, gs:// or a folder"
    ),
    template: Path = typer.Option(None, help="compiled pipeline; default build/pipelines/<pipeline>.yaml"),
    compile_first: bool = typer.Option(False, "--compile", help="compile before submitting"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the request; submit nothing"),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="run every step anew (default: each step's compiled caching option)"
    ),
    wait: bool = typer.Option(
        False, "--wait", help="stream the run's state until it ends; exit 1 unless it succeeded"
    ),
    poll_s: float = typer.Option(20.0, "--poll-s", help="--wait: seconds between state reads"),
    kfp_host: str = typer.Option(
        "", "--kfp-host", help="a Kubeflow Pipelines API URL: submit there (the kfp target) instead of Vertex"
    ),
    kfp_audience: str = typer.Option(
        "", "--kfp-audience", help="--kfp-host: the ID token's audience (IAP: its OAuth client ID)"
    ),
    overrides: list[str] = SET_OPTION,
) -> None:
    """Submit a pipeline to Vertex AI Pipelines as a PipelineJob, in the config's Vertex AI experiment, or
    with --kfp-host to a Kubeflow Pipelines backend (pipelines/kfp_backend.py).

    $SLMFORGE_VERTEX_ENDPOINT overrides the API endpoint (pipelines/vertex.py)."""
    import time

    from pipelines.parameters import pipeline_parameters
    from pipelines.vertex import (
        VertexConfigError,
        console_url,
        create_job,
        job_error,
        job_request,
        stream_states,
    )

    cfg = _load(config, overrides)
    target = "kfp" if kfp_host else "vertex"
    if pipeline == "evaluate":
        if not model:
            console.print("[red]--pipeline evaluate needs --model URI (the model to evaluate)[/red]")
            raise typer.Exit(2)
        params = {**pipeline_parameters(cfg, "evaluate", target), "model_uri": model}
    elif pipeline == "finetune":
        pipeline = "finetune-multinode" if cfg.train.nodes > 1 else "finetune"
        if target == "kfp" and pipeline == "finetune-multinode":
            console.print(
                "[red]train.nodes > 1 trains as a Vertex AI CustomJob: submit it to Vertex (no --kfp-host)[/red]"
            )
            raise typer.Exit(2)
        params = pipeline_parameters(cfg, pipeline, target)
    else:
        console.print(f"[red]--pipeline {pipeline}: use finetune or evaluate[/red]")
        raise typer.Exit(2)
    from pipelines.compiler import DEFAULT_OUT

    template = template or Path(DEFAULT_OUT[target]) / f"{pipeline}.yaml"
    if compile_first:
        compile_cmd(template.parent, target)
    if not template.is_file():
        how = "python compile.py" + (" --target kfp" if kfp_host else "")
        console.print(f"[red]{template} not found: run `{how}` first (or pass --compile)[/red]")
        raise typer.Exit(2)
    if kfp_host:
        _submit_kfp(cfg, params, template, kfp_host, kfp_audience, dry_run=dry_run, wait=wait, poll_s=poll_s)
        return
    try:
        request = job_request(cfg, params, template, enable_caching=False if no_cache else None)
    except VertexConfigError as e:
        console.print(f"[red]{e}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if dry_run:
        console.print_json(json.dumps(request, default=str))
        return
    job = create_job(request)
    console.print(f"submitted: {console_url(job)}", highlight=False, soft_wrap=True)
    console.print(f"experiment: {request['experiment']} (compare runs in the console's Experiments view)")
    if not wait:
        return
    state = stream_states(
        job, lambda s: console.print(f"{time.strftime('%H:%M:%S')} {s}", highlight=False), poll_s=poll_s
    )
    if state != "PIPELINE_STATE_SUCCEEDED":
        console.print(f"[red]{state}: {job_error(job)}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _submit_kfp(cfg, params, template, host, audience, *, dry_run, wait, poll_s) -> None:
    import time

    from pipelines.kfp_backend import (
        KfpError,
        kfp_client,
        kfp_request,
        run_error,
        run_url,
        stream_run_states,
        submit_run,
    )
    from pipelines.vertex import VertexConfigError

    try:
        request = kfp_request(cfg, params, template)
        if dry_run:
            console.print_json(json.dumps({**request, "host": host}, default=str))
            return
        client = kfp_client(host, audience)
    except (KfpError, VertexConfigError) as e:
        console.print(f"[red]{e}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    run = submit_run(client, request)
    console.print(f"submitted: {run_url(host, run.run_id)}", highlight=False, soft_wrap=True)
    console.print(
        f"experiment: {request['experiment']} (`slmforge runs list --kfp-host {host}`)", highlight=False
    )
    if not wait:
        return
    run = stream_run_states(
        client,
        run.run_id,
        lambda s: console.print(f"{time.strftime('%H:%M:%S')} {s}", highlight=False, soft_wrap=True),
        poll_s=poll_s,
    )
    if run.state != "SUCCEEDED":
        console.print(f"[red]{run.state}: {run_error(run)}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def main() -> None:
    app()


def submit_main() -> None:
    """``submit CONFIG`` == ``slmforge submit CONFIG``."""
    sys.argv.insert(1, "submit")
    app()


if __name__ == "__main__":
    main()
