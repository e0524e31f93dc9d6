"""``jax keys create|list|revoke``: the API keys of the HTTP services (see docs/api.md).

The key is printed once, by ``create``; only its SHA-256 is stored, so a lost key is revoked and
replaced, never recovered.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

keys_app = typer.Typer(help="API keys for `jax serve`: create, list, revoke.", no_args_is_help=True)

DbOption = Annotated[str | None, typer.Option(help="database URL (default: SQLite file)")]


async def _with_store(db: str | None, action: Any) -> Any:
    from jax_assistant.cli import _settings
    from jax_assistant.service.auth import ApiKeyStore
    from jax_assistant.storage.db import open_database

    settings = _settings(database_url=db)
    database = await open_database(settings.database_url)
    try:
        return await action(ApiKeyStore(database))
    finally:
        await database.close()


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="who or what uses the key, e.g. ci, frontend")],
    scope: Annotated[list[str], typer.Option(help="read, write or admin (repeatable; admin > write > read)")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
    db: DbOption = None,
) -> None:
    """Make a key and print it once: store it now, it cannot be shown again."""
    from jax_assistant.cli import _errors, err, out
    from jax_assistant.service.auth import ApiScope, parse_scope

    with _errors():
        scopes: list[ApiScope] = [parse_scope(s) for s in scope]
        row, key = asyncio.run(_with_store(db, lambda store: store.create(name, scopes)))
    if json_out:
        out.print_json(json.dumps({"id": row.id, "name": row.name, "scopes": row.scopes, "key": key}))
        return
    err.print(f"created key {row.id} ({row.name}, scopes: {', '.join(row.scopes)}); it is shown only once:")
    out.print(key, soft_wrap=True, highlight=False)


@keys_app.command("list")
def keys_list(json_out: Annotated[bool, typer.Option("--json")] = False, db: DbOption = None) -> None:
    """Every key made, active or revoked (never the key itself)."""
    from rich.table import Table

    from jax_assistant.cli import _errors, out

    with _errors():
        keys = asyncio.run(_with_store(db, lambda store: store.list()))
    if json_out:
        rows = [k.model_dump(mode="json", exclude={"key_hash"}) for k in keys]
        out.print_json(json.dumps(rows))
        return
    table = Table("id", "name", "scopes", "created", "revoked")
    for k in keys:
        revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else ""
        table.add_row(k.id, k.name, ",".join(k.scopes), k.created_at.isoformat(timespec="seconds"), revoked)
    out.print(table if keys else "no API keys (make one with `jax keys create --name NAME --scope write`)")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the id `jax keys list` shows")], db: DbOption = None
) -> None:
    """Revoke a key: a running service refuses it within seconds."""
    from jax_assistant.cli import _errors, _fail, out

    with _errors():
        done = asyncio.run(_with_store(db, lambda store: store.revoke(key_id.strip())))
    if not done:
        raise _fail(f"no active API key {key_id!r} (see `jax keys list`)")
    out.print(f"revoked {key_id}")
