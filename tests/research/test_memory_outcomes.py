"""How an outcome item from memory's trade_outcomes bank is read (the memory adapter's one rule)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from jax_assistant.config import Settings
from jax_assistant.learning.outcomes import outcome_memory_item
from jax_assistant.memory.facade import open_memory
from jax_assistant.research.memory_history import MemoryHistory, outcome_of


def test_outcome_labels_and_signs() -> None:
    assert outcome_of({"outcome": "WIN"}) == "win"
    assert outcome_of({"result": "stopped"}) == "loss"
    assert outcome_of({"rMultiple": -1.0}) == "loss"
    assert outcome_of({"pnl": 12.5}) == "win"
    assert outcome_of({"outcome": "open"}) is None
    assert outcome_of({"r": True}) is None  # a flag is not a number
    assert outcome_of({}) is None


async def test_past_outcomes_come_from_the_real_memory_and_never_from_the_future(db_url: str) -> None:
    """What `jax reflect` retains to trade_outcomes is what built-in research reads back (the memory
    facade on the embedded backend, SQLite and PostgreSQL), strictly before the run's session."""
    d0 = date(2015, 8, 3)

    def row(setup_id: str, strategy: str, r: float, day: date) -> dict[str, Any]:
        return {
            "setup_id": setup_id, "symbol": "AAPL", "strategy_id": strategy, "event_type": "gap_open",
            "direction": "long", "decided_on": day, "status": "target" if r > 0 else "stop",
            "settled_through": day, "exit_on": day, "r_multiple": r, "sessions_held": 2, "pnl": r * 10,
        }  # fmt: skip

    rows = [
        row("s1", "earnings_gap_v1", 2.0, d0),
        row("s2", "earnings_gap_v1", -1.0, d0 + timedelta(days=1)),
        row("s3", "rsi_momentum_v1", 1.5, d0 + timedelta(days=2)),
        row("s4", "earnings_gap_v1", 3.0, d0 + timedelta(days=30)),  # after the run's session
    ]
    memory = await open_memory(Settings(database_url=db_url))
    try:
        await memory.retain_many([outcome_memory_item(r) for r in rows], bank="trade_outcomes")
        history = MemoryHistory(memory)
        before = d0 + timedelta(days=10)
        symbol = await history.for_symbol("AAPL", before=before)
        strategy = await history.for_strategy("earnings_gap_v1", before=before)
    finally:
        await memory.close()
    assert (symbol.wins, symbol.losses, symbol.source) == (2, 1, "memory")
    assert (strategy.wins, strategy.losses) == (1, 1)  # s3 is another strategy, s4 is the future
