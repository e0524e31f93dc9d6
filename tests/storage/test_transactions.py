"""A write that fails part-way leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from tests.storage.factories import T0, count_rows, make_item, make_run, make_symbol_result, make_trade

from jax_assistant.domain import SymbolStatus
from jax_assistant.storage import Database, Repository
from jax_assistant.storage.tables import DeadLetterRow, EventRow, SymbolResultRow, TradeRow


class InjectedFailure(Exception):
    pass


@contextmanager
def fail_on(db: Database, fragment: str, *, after: int = 0) -> Iterator[None]:
    """Make the (after+1)-th statement containing ``fragment`` blow up before it reaches the DB."""
    seen = 0

    def hook(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal seen
        if fragment in statement:
            seen += 1
            if seen > after:
                raise InjectedFailure(statement[:60])

    # Every engine that writes: on a SQLite file, batches go through the writer thread's own engine.
    for engine in db.write_engines():
        event.listen(engine, "before_cursor_execute", hook)
    try:
        yield
    finally:
        for engine in db.write_engines():
            event.remove(engine, "before_cursor_execute", hook)


async def test_symbol_result_failure_rolls_back_events_and_trades(db: Database, repo: Repository) -> None:
    await repo.create_run(make_run())
    before = make_symbol_result(status=SymbolStatus.RUNNING, events=[], trades=[])
    await repo.save_symbol_result(before)

    with fail_on(db, "INSERT INTO symbol_results"), pytest.raises(InjectedFailure):
        await repo.save_symbol_result(make_symbol_result())

    assert await count_rows(db, EventRow) == 0
    assert await count_rows(db, TradeRow) == 0
    assert await count_rows(db, SymbolResultRow) == 1
    assert await repo.get_symbol_results("run-1") == [before]
    # The same write succeeds once the fault is gone.
    await repo.save_symbol_result(make_symbol_result())
    assert await repo.get_symbol_results("run-1") == [make_symbol_result()]


async def test_failure_in_a_later_chunk_discards_earlier_chunks(db: Database, repo: Repository) -> None:
    trades = [make_trade(f"t-{i:04d}", created_at=T0 + timedelta(seconds=i)) for i in range(1_100)]
    with fail_on(db, "INSERT INTO trades", after=1), pytest.raises(InjectedFailure):
        await repo.save_trades(trades, run_id="r", simulated=True)
    assert await count_rows(db, TradeRow) == 0
    assert await repo.save_trades(trades, run_id="r", simulated=True) == 1_100


async def test_constraint_violation_leaves_no_row(db: Database, repo: Repository) -> None:
    with pytest.raises(IntegrityError):
        await repo.add_dead_letter("no-such-run", "AAPL", "persist", "boom", 1, make_item())
    assert await count_rows(db, DeadLetterRow) == 0
    # The connection went back to the pool clean: later writes work.
    await repo.create_run(make_run("no-such-run"))
    assert await repo.add_dead_letter("no-such-run", "AAPL", "persist", "boom", 1, make_item()) > 0
