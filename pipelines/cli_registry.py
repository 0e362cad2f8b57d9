"""``slmforge promote``, ``slmforge rollback`` and ``slmforge lineage``: the registry side of the CLI, the
commands the GitHub Actions promote workflow calls (logic in components/register/promotion.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()

CONFIG = typer.Option(None, "--config", help="config YAML whose registry section to use")
TRACKING = typer.Option(
    None, "--tracking-uri", help="MLflow tracking URI (default: the config's, else embedded)"
)
REQUIRE_GREEN = typer.Option(
    True, "--require-green/--no-require-green", help="refuse a version whose recorded gate did not pass"
)
EVENTS = typer.Option(
    None, "--events", help="events stream (JSONL) to append to; default $SLMFORGE_HOME/events/registry.jsonl"
)


def _registry(config: Path | None, tracking_uri: str | None):
    from components.register.registries import open_registry

    if config is not None:
        from components.common.config import registry_spec
        from pipelines.cli_common import _load

        spec = registry_spec(_load(config))
        if tracking_uri and spec["backend"] == "mlflow":
            spec["tracking_uri"] = tracking_uri
        return open_registry(**spec)
    return open_registry("mlflow", tracking_uri=tracking_uri or "")


def _events(path: Path | None) -> Path:
    from components.common.home import slmforge_home

    path = path or slmforge_home() / "events" / "registry.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _move(fn, where: tuple[Path | None, str | None, Path | None], **kwargs) -> None:
    """Run ``fn`` (promote or rollback) on the registry and events stream that ``where`` (config,
    tracking URI, events path) names; print the change, or the refusal and exit 1 (2 for the registry)."""
    from components.register.backends import RegistryError
    from components.register.promotion import PromotionRefused

    config, tracking_uri, events = where
    try:
        change = fn(registry=_registry(config, tracking_uri), events_path=_events(events), **kwargs)
    except PromotionRefused as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        raise typer.Exit(1) from None
    except RegistryError as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        raise typer.Exit(2) from None
    console.print(change.sentence(), highlight=False)


def promote_cmd(
    model: str = typer.Option(..., "--model", help="registered model name"),
    version: str = typer.Option("", "--version", help="the version to promote"),
    run: str = typer.Option("", "--run", help="or: the pipeline run whose registered version to promote"),
    alias: str = typer.Option("champion", "--alias", help="alias to move"),
    require_green: bool = REQUIRE_GREEN,
    config: Path = CONFIG,
    tracking_uri: str = TRACKING,
    events: Path = EVENTS,
) -> None:
    """Move an alias (champion) to a version whose recorded gate passed; idempotent; audited."""
    from components.register.promotion import promote

    where = (config, tracking_uri, events)
    _move(promote, where, name=model, version=version, run=run, alias=alias, require_green=require_green)


def rollback_cmd(
    model: str = typer.Option(..., "--model", help="registered model name"),
    to: str = typer.Option(..., "--to", help="the version the alias goes back to"),
    alias: str = typer.Option("champion", "--alias", help="alias to move"),
    require_green: bool = REQUIRE_GREEN,
    config: Path = CONFIG,
    tracking_uri: str = TRACKING,
    events: Path = EVENTS,
) -> None:
    """Move an alias back to an earlier version; idempotent; audited."""
    from components.register.promotion import rollback

    _move(
        rollback, (config, tracking_uri, events), name=model, to=to, alias=alias, require_green=require_green
    )


def lineage_cmd(
    model_uri: str = typer.Argument(..., help="models:/NAME/VERSION or models:/NAME@ALIAS"),
    config: Path = CONFIG,
    tracking_uri: str = TRACKING,
) -> None:
    """Print the chain a registered version came from: data -> split -> adapter -> merged -> eval -> version."""
    from components.register.core import version_of
    from components.register.promotion import lineage

    registry = _registry(config, tracking_uri)
    try:
        found = version_of(model_uri, registry)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        raise typer.Exit(2) from None
    name = found.name
    table = Table(title=f"lineage of {found.uri}")
    for column in ("step", "sha256", "uri"):
        table.add_column(column, overflow="fold")
    for row in lineage(found):
        table.add_row(row["step"], row["sha256"], row["uri"])
    console.print(table)
    audit = [
        r for r in registry.audit(name) if r.get("to") == found.version or r.get("from") == found.version
    ]
    for record in audit:
        console.print(
            f"{record['time']} {record['action']} {record['alias']}: {record['from'] or 'none'} -> {record['to']} "
            f"by {record['actor']}",
            highlight=False,
        )
