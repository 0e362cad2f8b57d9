"""What the ``slmforge`` command modules share: the console, refusals, and loading a config.

pipelines/cli.py registers the sub-commands of pipelines/cli_*.py; they import what they share from here,
never from pipelines/cli.py, so no command module imports back the app that registers it.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()

# One option for every command that reads a config: `--set train.max_steps=300` (repeatable).
SET_OPTION = typer.Option(
    None, "--set", help="override a config field, SECTION.FIELD=VALUE (YAML value); repeatable"
)


def _refuse(message: str, out: Console = console) -> typer.Exit:
    """Print a refusal as is (rule messages hold brackets and patterns, not rich markup); raise the exit 2
    this returns."""
    out.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(2)


def _load(config: Path, overrides: list[str] | None = None):
    from components.common.config_load import load_config
    from components.common.config_rules import ConfigError

    try:
        return load_config(config, overrides or ())
    except ConfigError as e:
        raise _refuse(str(e)) from None
