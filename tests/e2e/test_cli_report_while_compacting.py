"""`jax run` prints its report while the completed run's checkpoints are compacted on the writer
thread, and the command ends only once the compaction is stored."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jax_assistant import cli
from jax_assistant.cli import app
from jax_assistant.config import Settings
from jax_assistant.orchestrator import Orchestrator
from jax_assistant.storage import Repository


def test_the_report_prints_before_the_compaction_ends(
    runner: CliRunner, jax_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    order: list[str] = []
    compact, report = Repository.compact_run, cli._report

    async def recorded_compact(self: Repository, run_id: str) -> int:
        order.append("compact started")
        done = await compact(self, run_id)
        order.append("compact ended")
        return done

    def recorded_report(*args: Any, **kwargs: Any) -> None:
        order.append("report")
        report(*args, **kwargs)

    monkeypatch.setattr(Repository, "compact_run", recorded_compact)
    monkeypatch.setattr(cli, "_report", recorded_report)
    result = runner.invoke(app, ["run", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert order == ["compact started", "report", "compact ended"]

    async def items() -> list[Any]:
        async with Orchestrator(Settings(provider="sample")) as orch:
            assert orch.repository is not None
            run = (await orch.repository.list_runs())[0]
            rows = await orch.repository.load_checkpoints(run.id)
            return [row.item for per_symbol in rows.values() for row in per_symbol]

    stored = asyncio.run(items())
    assert stored and all(item == {} for item in stored)  # compacted before the command ended
