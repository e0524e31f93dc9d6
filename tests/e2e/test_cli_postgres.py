"""`jax run` end to end on PostgreSQL (the production database), including a replay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from tests.pgutil import admin_url, create_database, drop_database
from typer.testing import CliRunner

from jax_assistant.cli import app

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    import secrets

    name = f"jax_e2e_{secrets.token_hex(5)}"
    asyncio.run(create_database(name))
    url = make_url(admin_url()).set(drivername="postgresql", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(drop_database(name))


def count(url: str, sql: str) -> Any:
    async def q() -> Any:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(q())


def test_run_and_replay_on_postgres(runner: CliRunner, jax_env: dict[str, str], pg_url: str) -> None:
    args = ["run", "FLUX.SIM", "ROAM.SIM", "ZEST.SIM", "--db", pg_url, "--json"]
    first = runner.invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    payload = json.loads(first.stdout)
    trades = sum(len(s["trades"]) for s in payload["symbols"])
    assert trades > 0 and {s["status"] for s in payload["symbols"]} == {"succeeded"}
    assert count(pg_url, "select count(*) from trades") == trades
    second = runner.invoke(app, args, catch_exceptions=False)
    assert second.exit_code == 0
    assert count(pg_url, "select count(*) from trades") == trades  # replay stores nothing twice
    assert count(pg_url, "select count(*) from runs") == 2
    listed = runner.invoke(app, ["trades", "list", "--db", pg_url, "--json"], catch_exceptions=False)
    assert len(json.loads(listed.stdout)) == trades
