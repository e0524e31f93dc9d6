"""`jax ingest FILE`: the same mixed batch through the CLI, with processing and an idempotent re-run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.ingest.batches import EXPECTED, SIGNIFICANT_SYMBOLS, mixed_batch, outcome_tuples
from typer.testing import CliRunner

from jax_assistant.cli import app
from jax_assistant.config import Settings
from jax_assistant.memory import open_memory
from jax_assistant.storage import Repository, open_database


async def _runs_and_memories(url: str) -> tuple[list[list[str]], int]:
    db = await open_database(url)
    try:
        runs = [r.symbols for r in await Repository(db).list_runs()]
    finally:
        await db.close()
    async with await open_memory(Settings(database_url=url)) as memory:
        count = 0
        for bank in ("signals", "market_events"):
            count += len(await memory.recall({"tags": ["ingest"], "limit": 50}, bank=bank))
    return runs, count


def test_cli_ingest_reports_each_item_processes_and_is_idempotent(database_url: str, tmp_path: Path) -> None:
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps(mixed_batch()))
    runner = CliRunner()
    first = runner.invoke(
        app, ["ingest", str(batch), "--db", database_url, "--json", "--correlation-id", "corr_cli_1"]
    )
    assert first.exit_code == 2, first.output  # rejected items: exit 2, the valid ones stored
    body = json.loads(first.stdout[: first.stdout.rindex("}") + 1])
    assert outcome_tuples(body["items"]) == EXPECTED
    assert body["processing"]["symbols"] == SIGNIFICANT_SYMBOLS and body["processing"]["run_id"]
    assert "5 observation(s) rejected" in first.stderr
    runs, memories = asyncio.run(_runs_and_memories(database_url))
    assert runs == [SIGNIFICANT_SYMBOLS] and memories == 3

    second = runner.invoke(app, ["ingest", str(batch), "--db", database_url])
    assert second.exit_code == 2, second.output
    assert "10 received: 0 accepted, 5 duplicate, 5 rejected, 0 failed" in second.stdout
    assert "timestamp: Field required" in second.stdout  # the reason, per item
    runs, memories = asyncio.run(_runs_and_memories(database_url))
    assert runs == [SIGNIFICANT_SYMBOLS] and memories == 3  # nothing stored or run twice


def test_cli_ingest_valid_batch_without_processing(database_url: str, tmp_path: Path) -> None:
    batch = tmp_path / "ok.json"
    batch.write_text(
        json.dumps(
            {"generated_at": "2026-11-27T00:00:00Z", "observations": mixed_batch()["observations"][:4]}
        )
    )
    result = CliRunner().invoke(app, ["ingest", str(batch), "--db", database_url, "--no-process"])
    assert result.exit_code == 0, result.output
    assert "4 received: 4 accepted" in result.stdout
    assert "processing ACME.SIM, BOLT.SIM, BYTE.SIM: not started (processing not requested)" in result.stdout
    runs, memories = asyncio.run(_runs_and_memories(database_url))
    assert runs == [] and memories == 3


def test_cli_ingest_unreadable_or_bad_file_names_it(database_url: str, tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["ingest", str(tmp_path / "nope.json"), "--db", database_url])
    assert missing.exit_code == 2 and "nope.json: cannot read" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(app, ["ingest", str(bad), "--db", database_url])
    assert result.exit_code == 2 and "bad.json: not valid JSON" in result.stderr
