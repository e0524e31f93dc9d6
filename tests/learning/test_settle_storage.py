"""Settling stored setups: persisted on SQLite and PostgreSQL, idempotent, never ahead of the date."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import func, select

from jax_assistant.domain import ConstraintResult, Direction, RiskResult, TradeRecord, TradeSetup
from jax_assistant.learning.outcomes import OutcomeConfig, outcome_from_row, settle
from jax_assistant.marketdata import CsvProvider
from jax_assistant.storage import Repository
from jax_assistant.storage.tables import TradeOutcomeRow


def record(sid: str, day: date, entry: float, stop: float, target: float, size: int = 10) -> TradeRecord:
    setup = TradeSetup(
        id=sid,
        symbol="AAPL",
        direction=Direction.LONG,
        entry=entry,
        stop=stop,
        targets=[target],
        strategy_id="s1",
        time=datetime(day.year, day.month, day.day, 21, tzinfo=UTC),
    )
    risk = RiskResult(
        position_size=size,
        risk_per_unit=abs(entry - stop),
        total_risk=abs(entry - stop) * size,
        r_multiple=2.0,
        risk_percent=1.0,
        account_size=10_000.0,
        constraints=ConstraintResult(allowed=True),
    )
    return TradeRecord(setup=setup, risk=risk)


async def count(repo: Repository) -> int:
    async with repo._db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(TradeOutcomeRow)) or 0)


async def test_settle_persists_once_and_later_bars_change_nothing(
    repo: Repository, aapl: CsvProvider
) -> None:
    stop_out = record("a", date(2015, 8, 19), 110.25, 106.0, 115.0)  # stopped 08-21 at 105.87 (gap)
    target = record("c", date(2015, 8, 25), 99.452, 97.0, 108.0)  # target 08-27
    await repo.save_trades([stop_out, target], run_id=None, simulated=False)
    cfg = OutcomeConfig()

    first = await settle(repo, aapl, cfg, as_of=date(2015, 8, 26))
    assert (first.checked, first.settled, first.still_open) == (2, 1, 1)
    [row] = await repo.list_outcomes()
    assert row["setup_id"] == "a" and row["status"] == "stop"
    assert row["pnl"] == round((105.87 - 109.37) * 10, 6)  # fill 109.37, exit 105.87, 10 shares

    again = await settle(repo, aapl, cfg, as_of=date(2015, 8, 26))
    assert (again.checked, again.settled) == (1, 0)  # "a" is not read again; "c" still running
    assert await count(repo) == 1

    later = await settle(repo, aapl, cfg, as_of=date(2015, 12, 31))
    assert later.settled == 1 and later.by_status == {"target": 1}
    rows = await repo.list_outcomes()
    assert [r["setup_id"] for r in rows] == ["a", "c"]
    assert rows[0] == row | {"settled_at": rows[0]["settled_at"]}  # the first outcome never moved
    assert outcome_from_row(rows[1]).won
    # Only exits on or before a date: what a replay as of 08-26 may read.
    assert [r["setup_id"] for r in await repo.list_outcomes(exited_through=date(2015, 8, 26))] == ["a"]
    assert set(await repo.outcomes_for(["c", "zzz"])) == {"c"}
    assert await settle(repo, aapl, cfg, as_of=date(2016, 6, 30)) == later.model_copy(
        update={"as_of": date(2016, 6, 30), "checked": 0, "settled": 0, "by_status": {}}
    )


async def test_unknown_symbol_is_reported_not_settled(repo: Repository, aapl: CsvProvider) -> None:
    rec = record("x", date(2015, 8, 19), 110.25, 106.0, 115.0)
    other = rec.model_copy(update={"setup": rec.setup.model_copy(update={"symbol": "NOPE"})})
    await repo.save_trades([other], run_id=None, simulated=False)
    report = await settle(repo, aapl, OutcomeConfig(), as_of=date(2015, 12, 31))
    assert report.unknown_symbols == ["NOPE"] and report.settled == 0
    assert await count(repo) == 0
