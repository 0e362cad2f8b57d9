"""``slmforge deploy`` and ``slmforge drift-check``: put a registry version behind an endpoint with a smoke
check, promote or roll it back, and watch it for drift (logic in components/deploy)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from pipelines.cli_common import SET_OPTION

console = Console()
ACTIONS = ("promote", "rollback", "status", "cost")


def options_of(cfg):
    """The deploy options from a config, exactly as the pipeline's deploy step gets them."""
    from components.deploy.actions import DeployOptions
    from pipelines.parameters import stage_options

    return stage_options(DeployOptions, "deploy", cfg)


def _predictions(given: Path | None, version) -> str:
    """The eval predictions the gold set is taken from: ``--predictions``, else the version's
    lineage.eval_exported.uri (a gs:// object is downloaded)."""
    source = str(given) if given else version.tags.get("lineage.eval_exported.uri", "")
    if source.startswith("gs://"):
        import tempfile

        from google.cloud import storage

        from components.common.gcs import split_uri

        bucket, blob = split_uri(source)
        local = Path(tempfile.mkdtemp(prefix="slmforge-gold-")) / "predictions.parquet"
        storage.Client().bucket(bucket).blob(blob).download_to_filename(str(local))
        return str(local)
    if not source or not Path(source).exists():
        raise FileNotFoundError(
            f"no eval predictions to take a gold set from ({source or 'the version has no lineage.eval_exported.uri'}"
            "); pass --predictions PATH (an evaluation's predictions table)"
        )
    return source


def _print_check(result) -> None:
    for line in result.reasons:
        style = "green" if line.startswith(("PASS", "OK")) else "red" if line.startswith("FAIL") else None
        console.print(line, style=style, markup=False, highlight=False)
    for row in result.differing[:5]:
        console.print(
            f"  differs: {row['id']}: offline {row['offline']!r} / served {row['served']!r}",
            markup=False,
            highlight=False,
        )


def deploy_cmd(
    what: str = typer.Argument(
        ...,
        help="a registry version to deploy (models:/NAME/VERSION or models:/NAME@ALIAS), or an action: "
        "promote | rollback | status | cost",
    ),
    config: Path = typer.Option(
        ..., "--config", "-c", help="config YAML (deploy, registry, task, eval, gates)"
    ),
    overrides: list[str] = SET_OPTION,
    predictions: Path = typer.Option(
        None,
        "--predictions",
        help="the version's eval predictions to take the gold set from (default: its lineage.eval_exported)",
    ),
) -> None:
    """Deploy a version (smoke check first; on Vertex as a canary next to the version serving now), or
    promote, roll back or show the config's deployment, or what keeping it up costs (cost). Exit 1 when a check or an action is refused."""
    from components.deploy.actions import DeployRefused, deploy_version
    from components.register.core import version_of
    from pipelines.cli_common import _load, _refuse
    from pipelines.cli_registry import _registry

    cfg = _load(config, overrides)
    opts = options_of(cfg)
    store = opts.store()
    if what in ACTIONS:
        _action(what, opts, store)
        return
    if cfg.deploy.target == "vertex" and cfg.registry.backend != "vertex":
        raise _refuse(
            "deploy.target vertex deploys versions of the Vertex AI Model Registry: set registry.backend: "
            "vertex (or deploy.target: local with a running `slmforge serve`)"
        )
    try:
        version = version_of(what, _registry(config, None))
    except (FileNotFoundError, ValueError) as e:
        raise _refuse(str(e)) from None
    try:
        source = _predictions(predictions, version)
        d, result = deploy_version(version, source, opts)
    except (DeployRefused, FileNotFoundError) as e:
        console.print(str(e), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    _print_check(result)
    console.print(f"deployment {opts.name}: {d.status} ({store.folder(opts.name)})", highlight=False)
    if not result.passed:
        raise typer.Exit(1)


def _action(what: str, opts, store) -> None:
    from components.deploy.actions import DeployRefused

    if what == "cost":  # what the config's Vertex deployment keeps up, from the price table
        try:
            console.print(opts.vertex.cost(), markup=False, highlight=False)
        except DeployRefused as e:
            console.print(str(e), style="red", markup=False, highlight=False)
            raise typer.Exit(1) from None
        return
    try:
        d = store.load(opts.name)
    except DeployRefused as e:
        console.print(str(e), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if what == "status":
        console.print(
            f"{d.name} ({d.target} {d.endpoint}): {d.status}, {d.model_uri}, split {d.split}; smoke "
            f"{'passed' if d.smoke_passed else 'failed'}",
            highlight=False,
        )
        for entry in d.history[-10:]:
            console.print(
                f"  {entry['time']} {entry['code']} {entry['message']}", markup=False, highlight=False
            )
        return
    from components.deploy.actions import promote, rollback

    try:
        d = (promote if what == "promote" else rollback)(store, opts.name, opts.vertex)
    except DeployRefused as e:
        console.print(str(e), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(f"{d.name}: {d.status}, split {d.split}", highlight=False)


def drift_check_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="config YAML (deploy, task, eval, gates)"),
    overrides: list[str] = SET_OPTION,
) -> None:
    """Ask the live endpoint the deployment's gold set again and compare with deploy time (the gate's
    paired bootstrap). Exit 1 on drift or when the endpoint cannot answer every row."""
    from components.deploy.actions import DeployRefused, drift_check
    from pipelines.cli_common import _load

    opts = options_of(_load(config, overrides))
    store, name = opts.store(), opts.name
    try:
        d = store.load(name)
        outcome = drift_check(store, name, opts.settings, opts.endpoint_of(d))
    except DeployRefused as e:
        console.print(str(e), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    for v in outcome["verdicts"]:
        console.print(v["sentence"], style="red" if v["drifted"] else "green", markup=False, highlight=False)
    console.print(f"{name}: {outcome['code']}", highlight=False)
    if outcome["drifted"] or outcome["failed"]:
        raise typer.Exit(1)
