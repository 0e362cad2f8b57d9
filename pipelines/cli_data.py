"""``slmforge data``: look at a dataset before a run — its shape, and what ingest and clean would do to it."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli_common import SET_OPTION

data_app = typer.Typer(no_args_is_help=True, help="Inspect and map datasets (shape, rejects, cleaning).")
console = Console()


@data_app.command()
def inspect(
    locator: str = typer.Argument(
        ..., help="PATH, jsonl:/json:/csv:/parquet:PATH, gs://..., or hf:NAME:SPLIT"
    ),
    rows: int = typer.Option(20, help="sample rows to read"),
    force: bool = typer.Option(False, "--force", help="show what a forced pick below 0.8 would take"),
) -> None:
    """Rank hypotheses about the data's shape, each with a confidence and the reason for it."""
    from components.ingest.shapes import AUTO_PICK, ShapeError, inspect_rows, resolve_shape
    from components.ingest.sources import materialize, parse_locator, sample_rows

    with tempfile.TemporaryDirectory() as tmp:
        loc, path = materialize(parse_locator(locator), tmp)
        sample = sample_rows(loc, path, rows)
    hypotheses = inspect_rows(sample)
    table = Table(title=f"{locator} ({loc.format}, {len(sample)} sample rows)")
    for col in ("rank", "shape", "confidence", "why", "field map"):
        table.add_column(col, justify="right" if col in ("rank", "confidence") else "left")
    for i, h in enumerate(hypotheses, start=1):
        fields = ", ".join(f"{k}: {v}" for k, v in h.fields.items())
        table.add_row(str(i), h.shape, f"{h.confidence:.2f}", h.rationale, fields)
    console.print(table)
    try:
        best = resolve_shape(hypotheses, force=force)
    except ShapeError as e:
        console.print(f"[yellow]{e}[/yellow]", highlight=False)
        raise typer.Exit(1) from None
    picked = "auto-picks" if best.confidence >= AUTO_PICK else "--force takes"
    console.print(f"[green]data.shape: auto {picked} {best.shape}[/green]")
    if best.fields and best.fields != {"prompt": "prompt", "completion": "completion"}:
        console.print(
            f"config: data.fields: {{prompt: {best.fields['prompt']}, completion: {best.fields['completion']}}}"
        )


def data_options(cfg, *, force: bool = False):
    """The ingest, clean and split options a pipeline run derives from ``cfg`` (same values, same rules)."""
    from components.clean.core import CleanOptions
    from components.ingest.core import IngestOptions
    from components.split.core import SplitOptions
    from pipelines.parameters import stage_options

    return (
        stage_options(IngestOptions, "ingest", cfg, force_shape=force),
        stage_options(CleanOptions, "clean", cfg),
        stage_options(SplitOptions, "split", cfg),
    )


def prepare_splits(cfg, work: Path) -> tuple[Path, Path]:
    """Ingest, clean and split the config's data into ``work``, as the pipeline does (the validation slice
    in validation.parquet): (train table, eval table)."""
    from components.clean.core import clean
    from components.ingest.core import ingest
    from components.split.core import split

    ingest_opts, clean_opts, split_opts = data_options(cfg)
    work.mkdir(parents=True, exist_ok=True)
    ingest(
        cfg.data.train, cfg.data.eval, ingest_opts, work / "ingested.parquet", work / "rejects-ingest.jsonl"
    )
    clean(work / "ingested.parquet", work / "cleaned.parquet", work / "rejects-clean.jsonl", clean_opts)
    split(
        work / "cleaned.parquet",
        work / "train.parquet",
        work / "eval.parquet",
        split_opts,
        work / "validation.parquet",
    )
    return work / "train.parquet", work / "eval.parquet"


@data_app.command(name="map")
def map_cmd(
    locator: str = typer.Argument(None, help="data locator; default: the config's data.train"),
    config: Path = typer.Option(
        ..., "--config", "-c", help="config YAML (shape, fields, task schema, clean)"
    ),
    commit: bool = typer.Option(False, "--commit", help="write the mapped rows, rejects and events to --out"),
    out: Path = typer.Option(None, help="where --commit writes (default: $SLMFORGE_HOME/data/<config name>)"),
    force: bool = typer.Option(False, "--force", help="take the best shape even below confidence 0.8"),
    sample: int = typer.Option(5, help="accepted rows to show"),
) -> None:
    """Dry-run ingest + clean on a locator: sample accepted rows and every rejection by reason."""
    from components.clean.core import clean
    from components.common.events import REASONS, DataError, check_reject_rate, write_events
    from components.common.home import slmforge_home
    from components.common.tables import iter_row_batches
    from components.ingest.core import ingest
    from components.ingest.shapes import ShapeError
    from components.ingest.sources import LocatorError
    from pipelines.cli_common import _load

    cfg = _load(config)
    d = cfg.data
    opts, clean_opts, _ = data_options(cfg, force=force)
    work = Path(tempfile.mkdtemp(prefix="slmforge-map-"))
    try:
        try:
            ing = ingest(
                locator or d.train,
                "" if locator else d.eval,
                opts,
                work / "ingested.parquet",
                work / "r1.jsonl",
            )
        except ShapeError as e:
            console.print(str(e), style="red", markup=False, highlight=False)
            raise typer.Exit(2) from None
        except (DataError, LocatorError, FileNotFoundError) as e:  # e.g. every row rejected
            if commit and (work / "r1.jsonl").is_file():  # the rejects say why: keep them
                dest = out or slmforge_home() / "data" / cfg.name
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(work / "r1.jsonl", dest / "rejects.jsonl")
                console.print(f"rejects written to {dest / 'rejects.jsonl'}", highlight=False)
            console.print(str(e), style="red", markup=False, highlight=False)
            raise typer.Exit(1) from None
        console.print(f"shape: [bold]{ing.shape.shape}[/bold] ({ing.shape.rationale})")
        cl = clean(work / "ingested.parquet", work / "dataset.parquet", work / "r2.jsonl", clean_opts)
        rejected = ing.rejected + cl.rejected
        _print_sample(next(iter_row_batches(work / "dataset.parquet", sample), []))
        _print_rejects(rejected, {**ing.samples, **cl.samples}, REASONS)
        console.print(
            f"{ing.rows_in} rows in = [green]{cl.kept} accepted[/green] + {sum(rejected.values())} rejected"
            + (f"; PII redacted in {cl.pii_rows} rows ({dict(cl.pii)})" if cl.pii_rows else "")
        )
        _print_lengths(cl.token_lengths, work / "r2.jsonl", clean_opts.max_tokens)
        failure = check_reject_rate(
            "clean", ing.rows_in, dict(rejected), d.max_reject_rate, {**ing.samples, **cl.samples}
        )
        if failure:
            console.print(
                f"a run would stop here: {failure['message']}", style="red", markup=False, highlight=False
            )
        if commit:
            dest = out or slmforge_home() / "data" / cfg.name
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(work / "dataset.parquet", dest / "dataset.parquet")
            with open(dest / "rejects.jsonl", "w", encoding="utf-8") as fh:
                for part in ("r1.jsonl", "r2.jsonl"):
                    fh.write((work / part).read_text(encoding="utf-8"))
            write_events(dest / "events.jsonl", None, ing.events + cl.events)
            console.print(f"written to {dest}; use it with  data.train: parquet:{dest / 'dataset.parquet'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failure:  # scripts can rely on it: a run on this data would stop at ingest/clean
        raise typer.Exit(1)


def _print_lengths(kept: list[int], clean_rejects: Path, limit: int) -> None:
    """Tokens per rendered example (the base model's tokenizer and chat template) and the train.max_length
    that would keep every row: what preflight would say, before a run."""
    over = []
    for line in clean_rejects.read_text(encoding="utf-8").splitlines() if clean_rejects.is_file() else []:
        record = json.loads(line)
        if record.get("code") == "OVER_LENGTH":
            over.append(int(record["detail"].split()[0]))  # "N tokens > LIMIT"
    lengths = sorted([*kept, *over])
    if not lengths or limit <= 0:
        return
    p95 = lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))]
    line = (
        f"tokens per example: p50 {lengths[len(lengths) // 2]}, p95 {p95}, max {lengths[-1]} (limit {limit})"
    )
    if over:
        line += f"; {len(over)} rows are longer: train.max_length {lengths[-1]} would keep every row"
    console.print(line, highlight=False)


def _print_sample(rows: list[dict]) -> None:
    table = Table(title=f"accepted rows (first {len(rows)})")
    for col in ("id", "group", "history", "prompt", "completion"):
        table.add_column(col, overflow="fold")
    for r in rows:
        turns = len(json.loads(r["history"]))
        table.add_row(
            r["id"], r["group"], f"{turns} turns" if turns else "", r["prompt"][:80], r["completion"][:80]
        )
    console.print(table)


def _print_rejects(rejected: Counter, samples: dict, reasons: dict) -> None:
    if not rejected:
        console.print("[green]no rows rejected[/green]")
        return
    table = Table(title="rejected rows by reason")
    for col in ("reason", "rows", "stage", "meaning", "e.g. rows"):
        table.add_column(col, justify="right" if col == "rows" else "left", overflow="fold")
    for code, n in rejected.most_common():
        r = reasons[code]
        table.add_row(code, str(n), r.stage, r.meaning, ", ".join(samples.get(code, [])))
    console.print(table)


@data_app.command(name="augment")
def augment_cmd(
    config: Path = typer.Argument(..., help="config YAML (data.augment: the teacher, n, oracle, budget)"),
    overrides: list[str] = SET_OPTION,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print the teacher calls and their estimated cost; call nothing"
    ),
    out: Path = typer.Option(
        None, help="where the rows, report and events go (default: $SLMFORGE_HOME/data/<config name>/augment)"
    ),
) -> None:
    """Paraphrase the training rows with the config's teacher, keep what the validator confirms.

    Runs ingest, clean and split as a pipeline run would (the same options), then the augment stage on the
    training rows; writes train.parquet (every original row, then the added ones), eval.parquet,
    augmentation.md and events.jsonl."""
    from components.augment.core import report_markdown
    from components.augment.stage import AugmentOptions, plan, run_stage
    from components.common.events import write_events
    from components.common.home import slmforge_home
    from pipelines.cli_common import _load, _refuse
    from pipelines.parameters import stage_options

    cfg = _load(config, overrides)
    opts = stage_options(AugmentOptions, "augment", cfg, enabled=True)
    dest = out or slmforge_home() / "data" / cfg.name / "augment"
    work = Path(tempfile.mkdtemp(prefix="slmforge-augment-"))
    try:
        train, evals = prepare_splits(cfg, work)
        try:
            if dry_run:
                est = plan(train, opts)
                cost = (
                    "unknown (no sourced price)" if est.estimated_usd is None else f"${est.estimated_usd:.4f}"
                )
                console.print(
                    f"{est.calls} teacher calls ({est.cached} answered in the cache {opts.cache_path}); "
                    f"estimated cost at most {cost}",
                    highlight=False,
                )
                return
            dest.mkdir(parents=True, exist_ok=True)
            result = run_stage(train, evals, dest / "train.parquet", opts)
        except ValueError as e:  # a teacher the options cannot build, an oracle that does not import
            raise _refuse(str(e)) from None
        shutil.copyfile(evals, dest / "eval.parquet")
        (dest / "augmentation.md").write_text(report_markdown(result), encoding="utf-8")
        write_events(dest / "events.jsonl", None, result.events)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    console.print(report_markdown(result), markup=False, highlight=False)
    console.print(
        f"written to {dest} (canonical tables: id, group, source, history, prompt, completion); a run "
        "augments by itself with data.augment.enabled: true",
        highlight=False,
    )
