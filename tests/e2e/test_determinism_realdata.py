"""All 505 real symbols: the decisions a run stores are byte-identical at concurrency 1 and 8 and on a
rerun, and the portfolio's room goes to the best-ranked setups of the watchlist, not to the
alphabetically first symbols (both were false before allocation became one run-level step)."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from jax_assistant.config import EngineConfig, Settings
from jax_assistant.domain import SymbolResult
from jax_assistant.orchestrator import Orchestrator, RunRequest

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

AS_OF = date(2017, 11, 3)


async def _run(shared_data: Path, db: Path, concurrency: int) -> tuple[str, list[SymbolResult]]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        provider="csv",
        data_path=shared_data / "daily_ohlcv_stooq_sp500.csv.gz",
        engine=EngineConfig(concurrency=concurrency),
        metrics_enabled=False,
    )
    async with Orchestrator(settings) as orch:
        outcome = await orch.start_run(RunRequest(as_of=AS_OF))
    assert len(outcome.results) == 505
    return outcome.run.id, outcome.results


def _stored_decisions(db: Path, run_id: str) -> list[tuple[Any, ...]]:
    """The run's decision rows exactly as stored (the risk JSON as its text), without the run id and
    the wall-clock ``decided_at``."""
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "select setup_id, symbol, strategy_id, allowed, position_size, account_size, risk_percent,"
            " cast(risk as text) from decisions where run_id = ? order by setup_id",
            (run_id,),
        ).fetchall()


async def test_505_symbols_store_identical_decisions_at_concurrency_1_and_8_and_on_rerun(
    shared_data: Path, tmp_path: Path
) -> None:
    stored = []
    results: list[SymbolResult] = []
    for name, concurrency in (("c1", 1), ("c8", 8), ("c8-again", 8)):
        db = tmp_path / f"{name}.db"
        run_id, results = await _run(shared_data, db, concurrency)
        stored.append(_stored_decisions(db, run_id))
    assert len(stored[0]) > 50  # a busy day: many candidates compete for the room
    assert stored[0] == stored[1] == stored[2]

    # The room goes by rank: every allowed setup outranks every setup refused for lack of room.
    trades = [t for r in results for t in r.trades if t.risk.rank is not None]
    allowed = [t for t in trades if t.risk.allowed]
    no_room = [
        t
        for t in trades
        if any(
            v.code in ("TOO_MANY_OPEN_POSITIONS", "LEVERAGE_TOO_HIGH") for v in t.risk.constraints.violations
        )
        and not any(
            v.code in ("STOP_TOO_TIGHT", "STOP_TOO_WIDE", "RISK_PER_TRADE_TOO_LOW")
            for v in t.risk.constraints.violations
        )
    ]
    assert allowed and no_room
    assert max(t.risk.rank or 0 for t in allowed) < min(t.risk.rank or 0 for t in no_room)
    # ... which is not the alphabetical order of the watchlist (the old first-come behaviour).
    first_symbols = sorted({t.setup.symbol for t in trades})[: len(allowed)]
    assert sorted(t.setup.symbol for t in allowed) != first_symbols
