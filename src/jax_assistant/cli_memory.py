"""``jax memory ...``: the jax-memory service command (registered in cli.py as the ``memory`` group)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Annotated

import typer

memory_app = typer.Typer(
    help="The memory service (retain / recall / reflect over HTTP).", no_args_is_help=True
)


@memory_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="interface to bind (0.0.0.0 for every interface)")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, envvar=["JAX_MEMORY_PORT"], help="TCP port (env JAX_MEMORY_PORT)")
    ] = 8090,
    db: Annotated[
        str | None,
        typer.Option(
            envvar="JAX_MEMORY_DATABASE_URL",
            help="the service's own database (default: SQLite memory.db in the data folder)",
        ),
    ] = None,
) -> None:
    """Run jax-memory: POST /tools, /v1/memory/*, Hindsight routes, /audit (see docs/memory.md)."""
    import uvicorn

    from jax_assistant.cli import _errors, _settings, err
    from jax_assistant.memory.app import create_app, memory_database_url
    from jax_assistant.observability.logging import configure_logging
    from jax_assistant.storage import open_database

    settings = _settings()
    if "log_level" not in settings.model_fields_set:
        configure_logging("INFO", json=settings.log_json, stream=sys.stderr)

    async def preflight(url: str) -> None:
        # Open (and migrate) the store once here: a bad URL is one line, not a uvicorn traceback.
        db = await open_database(url)
        await db.close()

    with _errors():
        url = memory_database_url(db)
        asyncio.run(preflight(url))
        application = create_app(settings, database_url=url)
    err.print(f"jax-memory listening on http://{host}:{port}")
    from jax_assistant.service.server import header_deadline_protocol

    # As `jax serve`: our redacted access log (api.access_log), not uvicorn's (it logs query strings),
    # and a deadline on request headers (slowloris).
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        log_config=None,
        timeout_graceful_shutdown=10,
        access_log=False,
        http=header_deadline_protocol(settings.api.header_timeout_s),
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise typer.Exit(3)
