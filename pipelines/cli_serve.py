"""``slmforge serve MODEL``: an OpenAI-compatible chat-completions server for a model on this machine
(components/deploy/serve.py), for developers and for the smoke and drift checks."""

from __future__ import annotations

import errno
import signal
from pathlib import Path

import typer

from pipelines.cli_common import _refuse, console


def _registry_spec(config: Path | None, tracking_uri: str | None) -> dict:
    """The registry a ``models:/`` MODEL is read from: the config's, else MLflow at ``tracking_uri``
    (default: the one ``slmforge run`` registers into, $SLMFORGE_HOME/mlflow.db)."""
    if config is not None:
        from components.common.config import registry_spec
        from pipelines.cli_common import _load

        spec = registry_spec(_load(config))
        if tracking_uri and spec["backend"] == "mlflow":
            spec["tracking_uri"] = tracking_uri
        return spec
    return {"backend": "mlflow", "tracking_uri": tracking_uri or ""}


def resolve_model(model: str, spec: dict) -> str:
    """A loadable folder (or locator) for MODEL: a registry version is downloaded once into
    $SLMFORGE_HOME/serve/NAME/VERSION (versions do not change, an alias is resolved on every start);
    anything else is given to the loader as it is."""
    if not model.startswith("models:/"):
        return model
    import shutil

    from components.common.home import slmforge_home
    from components.evaluate.fetch import fetch_model
    from components.register.core import registry_from_spec, version_of

    found = version_of(model, registry_from_spec(spec))
    dst = slmforge_home() / "serve" / found.name / str(found.version)
    if not dst.is_dir():
        partial = dst.with_name(dst.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        fetch_model(f"models:/{found.name}/{found.version}", spec, partial)  # found.uri: backend's form
        partial.rename(dst)  # whole or not at all: a stopped download is not served next time
    console.print(f"{model} -> {found.uri} ({dst})", highlight=False)
    return str(dst)


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the server as Ctrl-C does


def serve_cmd(
    model: str = typer.Argument(
        ...,
        help="a model folder (exported model or Model artifact), models:/NAME@ALIAS or models:/NAME/VERSION",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8000, "--port", help="port to listen on (0: any free port)"),
    max_new_tokens: int = typer.Option(
        256, "--max-new-tokens", help="answer budget of a request that sends no max_tokens"
    ),
    config: Path = typer.Option(None, "--config", help="config YAML whose registry section to use"),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI for models:/ (default: $SLMFORGE_HOME/mlflow.db)"
    ),
) -> None:
    """Serve a model as an OpenAI-compatible chat-completions API, with greedy decoding and the same
    prompts and output constraints as offline evaluation (answers match the evaluation report's)."""
    from rich.markup import escape

    from components.deploy.serve import ChatServer
    from components.register.backends import RegistryError

    try:
        source = resolve_model(model, _registry_spec(config, tracking_uri))
    except (ValueError, FileNotFoundError, RegistryError) as e:
        raise _refuse(str(e) if model in str(e) else f"{model}: {e}") from None
    if not model.startswith("models:/") and "://" not in model and not Path(model).is_dir():
        raise _refuse(f"{model}: no such folder. Fix: give an exported model folder or models:/NAME@ALIAS")
    console.print(f"loading {source} ...", highlight=False)
    try:
        server = ChatServer(source, host=host, port=port, max_new_tokens=max_new_tokens, model_id=model)
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise _refuse(f"cannot listen on {host}:{port}: {e}. Fix: pick another --port") from None
        raise _refuse(f"{model}: {e}") from None
    except ValueError as e:  # not a loadable model (no tokenizer pad token, pickle weights, ...)
        raise _refuse(f"{model}: {e}") from None
    example = (
        f"curl {server.url}/v1/chat/completions -H 'Content-Type: application/json' "
        """-d '{"messages": [{"role": "user", "content": "Hello"}]}'"""
    )
    console.print(
        f"serving {escape(model)} at [bold]{server.url}[/bold] (Ctrl-C stops)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"try: {example}", markup=False, highlight=False, soft_wrap=True)
    try:
        # Both set here: a process started in the background by a shell inherits SIGINT ignored.
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, _stop)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    console.print("stopped")
