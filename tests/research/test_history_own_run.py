"""Built-in research counts earlier setups from earlier runs only, never the run's own.

A run stores its setups while it runs, so counting them would make one symbol's research depend on
which other symbols happened to persist first: the same inputs would store different research text at
another concurrency or on a rerun (found by ``bench/same_rows.py`` at lookback 60).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import insert

from jax_assistant.research.store import StorageHistory
from jax_assistant.storage import open_database
from jax_assistant.storage.tables import TradeRow


def _trade(setup_id: str, symbol: str, run_id: str | None, session: str, allowed: bool) -> dict[str, object]:
    return {
        "id": setup_id,
        "symbol": symbol,
        "strategy_id": "ma_crossover_v1",
        "direction": "long",
        "event_id": None,
        "allowed": allowed,
        "position_size": 10 if allowed else 0,
        "setup": {"id": setup_id, "time": f"{session}T20:00:00+00:00"},
        "risk": {},
        "event": None,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "first_run_id": run_id,
        "simulated": False,
    }


async def test_a_runs_own_setups_are_not_its_history(db_url: str) -> None:
    db = await open_database(db_url)
    try:
        async with db.transaction() as conn:
            await conn.execute(
                insert(TradeRow),
                [
                    _trade("a1", "AAPL", "run_earlier", "2015-09-01", True),
                    _trade("a2", "MSFT", "run_earlier", "2015-09-02", False),
                    _trade("a3", "XOM", None, "2015-09-03", True),  # stored before runs were recorded
                    _trade("n1", "AAPL", "run_now", "2015-09-20", True),  # this run's, earlier session
                    _trade("n2", "JPM", "run_now", "2015-09-21", True),
                    _trade("f1", "AAPL", "run_earlier", "2015-10-05", True),  # after the date: never
                ],
            )
        history = StorageHistory(db)
        before = date(2015, 10, 1)
        everything = await history.for_strategy("ma_crossover_v1", before=before)
        earlier = await history.for_strategy("ma_crossover_v1", before=before, exclude_run="run_now")
        aapl = await history.for_symbol("AAPL", before=before, exclude_run="run_now")
    finally:
        await db.close()
    assert (everything.setups, everything.allowed) == (5, 4)
    assert (earlier.setups, earlier.allowed, earlier.last_session) == (3, 2, date(2015, 9, 3))
    assert (aapl.setups, aapl.last_session) == (1, date(2015, 9, 1))
