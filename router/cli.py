"""`flotilla router` sub-commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("run")
def run(
    config: Annotated[
        Path, typer.Option("--config", "-c", exists=True, dir_okay=False, help="router YAML/JSON")
    ],
    host: Annotated[str | None, typer.Option(help="override the config's listen address")] = None,
    port: Annotated[int | None, typer.Option(help="override the config's port")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Serve the OpenAI-compatible endpoint in front of the configured instances."""
    import asyncio

    from flotilla.router import logs
    from flotilla.router.app import serve
    from flotilla.router.config import load_config

    try:
        cfg = load_config(config)
    except ValueError as e:  # pydantic's ValidationError too: say what is wrong, not a traceback
        typer.echo(f"invalid router config {config}: {e}", err=True)
        raise typer.Exit(2) from None
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if overrides:
        cfg = cfg.model_copy(update=overrides)
    logs.configure(log_level)
    try:
        import uvloop
    except ImportError:  # optional: the plain asyncio loop works, only slower
        asyncio.run(serve(cfg))
    else:
        uvloop.run(serve(cfg))


@app.command("policies")
def policies() -> None:
    """List the balancing policies and their parameters."""
    import json

    from flotilla.router.policies import default_registry

    registry = default_registry()
    for name in registry.names():
        schema = registry.params_model(name).model_json_schema()
        typer.echo(f"{name}: {json.dumps(schema.get('properties', {}))}")


@app.command("hash-key")
def hash_key() -> None:
    """Read an API key on stdin; print its sha256 for `auth.keys[].sha256` (keeps the key out of configs)."""
    import hashlib
    import sys

    key = sys.stdin.readline().strip()
    if not key:
        raise typer.BadParameter("no key on stdin")
    typer.echo(hashlib.sha256(key.encode()).hexdigest())
