"""`jax db init`, `jax db prune` and `jax trades list --run`, through the real command line."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from tests.pgutil import admin_url
from tests.storage.factories import make_run
from typer.testing import CliRunner

from jax_assistant.cli import app
from jax_assistant.storage import Repository, open_database
from jax_assistant.storage.db import normalise_database_url


def invoke(*args: str, url: str, **env: str):  # type: ignore[no-untyped-def]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "DATABASE_URL"}
    return CliRunner().invoke(
        app, list(args), env={**clean, "JAX_DATABASE_URL": url, "COLUMNS": "200", **env}
    )


def test_db_init_creates_then_finds_the_schema_up_to_date(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'new' / 'dir' / 'jax.db'}"
    first = invoke("db", "init", url=url)
    assert first.exit_code == 0, first.output
    assert "migrated empty database -> 0008_outcomes" in first.stdout
    second = invoke("db", "init", url=url)
    assert second.exit_code == 0, second.output
    assert "schema up to date (0008_outcomes)" in second.stdout


@pytest.mark.postgres
def test_db_init_on_a_missing_postgres_database_says_how_to_create_it() -> None:
    base = normalise_database_url(admin_url())
    url = base.rsplit("/", 1)[0] + "/jax_no_such_database_42"
    result = invoke("db", "init", url=url)
    assert result.exit_code == 2, result.output
    assert 'database "jax_no_such_database_42" does not exist' in result.stderr
    assert "createdb -h 127.0.0.1 -p 5432" in result.stderr and "jax_no_such_database_42" in result.stderr


def test_prune_and_trades_by_run(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}"
    small = invoke("run", "--json", url=url)
    big = invoke("run", "--json", "--account-size", "100000", url=url)
    assert small.exit_code == 0 and big.exit_code == 0, small.output + big.output
    small_id, big_id = (json.loads(r.stdout)["run"]["id"] for r in (small, big))

    for run_id, account in ((small_id, 10_000.0), (big_id, 100_000.0)):
        listed = invoke("trades", "list", "--run", run_id, "--limit", "1000", "--json", url=url)
        assert listed.exit_code == 0, listed.output
        trades = json.loads(listed.stdout)
        assert trades and {t["risk"]["accountSize"] for t in trades} == {account}

    kept = invoke("db", "prune", "--older-than", "30d", "--json", url=url)
    assert kept.exit_code == 0, kept.output
    assert set(json.loads(kept.stdout)["removed"].values()) == {0}

    time.sleep(1.2)  # both runs now finished over a second ago
    pruned = invoke("db", "prune", "--older-than", "1s", "--json", url=url, JAX_LOG_LEVEL="ERROR")
    assert pruned.exit_code == 0, pruned.output
    removed = json.loads(pruned.stdout)["removed"]
    assert removed["runs"] == 2 and removed["symbolResults"] == 40 and removed["decisions"] > 0
    listed = invoke("runs", "list", "--json", url=url)
    assert json.loads(listed.stdout) == []

    bad = invoke("db", "prune", "--older-than", "soon", url=url)
    assert bad.exit_code == 2 and "use a number and a unit" in bad.stderr


def test_runs_list_and_show_say_interrupted_with_the_resume_command(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}"

    async def dead() -> None:
        db = await open_database(url)
        try:
            await Repository(db).create_run(make_run("run-dead"))  # running, nobody holds it
        finally:
            await db.close()

    asyncio.run(dead())
    listed = invoke("runs", "list", url=url)
    assert listed.exit_code == 0, listed.output
    assert "interrupted" in listed.stdout and "jax run --resume run-dead" in listed.stdout
    shown = invoke("runs", "show", "run-dead", "--json", url=url)
    assert json.loads(shown.stdout)["run"]["status"] == "interrupted"
    shown = invoke("runs", "show", "run-dead", url=url)
    assert "jax run --resume run-dead" in shown.stdout
