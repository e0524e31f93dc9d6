"""Per-run risk decisions: a setup shared by two runs keeps each run's own sizing."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event, select, text
from tests.storage.factories import T0, count_rows, make_run, make_symbol_result, make_trade

from jax_assistant.domain import RiskResult, TradeRecord
from jax_assistant.engines.writer import GroupCommitWriter
from jax_assistant.storage import Database, Repository
from jax_assistant.storage.repository import RecordsWrite, SymbolResultWrite
from jax_assistant.storage.tables import DecisionRow, TradeRow


def resized(record: TradeRecord, account_size: float, size: int) -> TradeRecord:
    risk = record.risk.model_copy(update={"account_size": account_size, "position_size": size})
    return record.model_copy(update={"risk": RiskResult.model_validate(risk.model_dump())})


async def test_each_run_reads_back_its_own_sizes(db: Database, repo: Repository) -> None:
    await repo.create_run(make_run("run-1"))
    await repo.create_run(make_run("run-2"))
    first = make_symbol_result("AAPL")
    # The rerun finds the same setups (same ids) but sizes them against a 10x account.
    second = first.model_copy(
        update={"run_id": "run-2", "trades": [resized(t, 100_000.0, 200) for t in first.trades]}
    )
    await repo.save_symbol_result(first)
    await repo.save_symbol_result(second)

    [one] = await repo.get_symbol_results("run-1")
    [two] = await repo.get_symbol_results("run-2")
    assert [t.risk.account_size for t in one.trades] == [10_000.0, 10_000.0]
    assert [t.risk.position_size for t in one.trades] == [20, 20]
    assert [t.risk.account_size for t in two.trades] == [100_000.0, 100_000.0]
    assert [t.risk.position_size for t in two.trades] == [200, 200]
    assert two.trades == second.trades
    # Setups are still stored once; decisions once per (run, setup), with queryable columns.
    assert await count_rows(db, TradeRow) == 2
    assert await count_rows(db, DecisionRow) == 4
    assert await count_rows(db, DecisionRow, run_id="run-2", account_size=100_000.0, position_size=200) == 2

    listed = await repo.list_trades(run_id="run-2")
    assert sorted(t.risk.position_size for t in listed) == [200, 200]
    assert {t.setup.id for t in await repo.list_trades(run_id="run-1", symbol="MSFT")} == set()


async def test_a_resumed_run_replaces_only_its_own_decision(repo: Repository) -> None:
    await repo.create_run(make_run("run-1"))
    await repo.create_run(make_run("run-2"))
    base = make_symbol_result("AAPL")
    await repo.save_symbol_result(base)
    await repo.save_symbol_result(base.model_copy(update={"run_id": "run-2"}))
    redo = base.model_copy(
        update={"run_id": "run-2", "trades": [resized(t, 50_000.0, 7) for t in base.trades]}
    )
    await repo.save_symbol_result(redo)
    assert [t.risk.position_size for t in (await repo.get_symbol_results("run-2"))[0].trades] == [7, 7]
    assert [t.risk.position_size for t in (await repo.get_symbol_results("run-1"))[0].trades] == [20, 20]


async def risk_payloads(db: Database, run_id: str) -> dict[str, str]:
    # The stored text itself, as the database holds it (not a re-serialised value).
    stmt = text("select setup_id, cast(risk as text) from decisions where run_id = :r order by setup_id")
    async with db.engine.connect() as conn:
        return {row[0]: row[1] for row in (await conn.execute(stmt, {"r": run_id})).all()}


async def test_decision_payloads_are_byte_identical_for_the_same_inputs(
    db: Database, repo: Repository
) -> None:
    await repo.create_run(make_run("run-1"))
    await repo.create_run(make_run("run-2"))
    result = make_symbol_result("AAPL")
    # Same decisions made at other wall-clock times: only decided_at may differ.
    later = result.model_copy(
        update={
            "run_id": "run-2",
            "trades": [t.model_copy(update={"created_at": T0.replace(year=2025)}) for t in result.trades],
        }
    )
    await repo.save_symbol_result(result)
    await repo.save_symbol_result(later)
    one, two = await risk_payloads(db, "run-1"), await risk_payloads(db, "run-2")
    assert one == two and len(one) == 2
    assert "2024" not in "".join(one.values())  # no timestamp inside the payload
    async with db.engine.connect() as conn:
        stamps = (await conn.execute(select(DecisionRow.run_id, DecisionRow.decided_at))).all()
    assert {r: d.year for r, d in stamps} == {"run-1": 2024, "run-2": 2025}


async def test_new_risk_fields_are_stored_whole(db: Database, repo: Repository) -> None:
    """Whatever the RiskResult dumps is kept: fields added to it later need no schema change."""
    await repo.create_run(make_run("run-1"))
    record = make_trade("s-1")
    await repo.write_batch([RecordsWrite("run-1", [], [record])])
    async with db.engine.connect() as conn:
        stored = await conn.scalar(select(DecisionRow.risk))
    assert stored == record.risk.model_dump(mode="json")


class StatementLog:
    def __init__(self, db: Database) -> None:
        self.statements: list[str] = []
        for engine in db.write_engines():
            event.listen(engine, "before_cursor_execute", self._record)
        self._db = db

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def count(self, prefix: str) -> int:
        return sum(1 for s in self.statements if s.startswith(prefix))


async def test_records_written_by_persist_are_not_written_again_by_the_result(
    db: Database, repo: Repository
) -> None:
    await repo.create_run(make_run("run-1"))
    writer = GroupCommitWriter(repo)
    result = make_symbol_result("AAPL")
    log = StatementLog(db)
    try:
        await writer.save_records("run-1", "AAPL", result.events, result.trades)
        await writer.write(SymbolResultWrite(result))
    finally:
        await writer.aclose()
    assert log.count("INSERT INTO trades") == 1
    assert log.count("INSERT INTO events") == 1
    assert log.count("INSERT INTO decisions") == 1
    assert log.count("INSERT INTO symbol_results") == 1
    assert await repo.get_symbol_results("run-1") == [result]


async def test_a_result_that_changed_after_persist_writes_its_records(db: Database, repo: Repository) -> None:
    await repo.create_run(make_run("run-1"))
    writer = GroupCommitWriter(repo)
    result = make_symbol_result("AAPL")
    try:
        await writer.save_records("run-1", "AAPL", result.events, result.trades[:1])
        await writer.write(SymbolResultWrite(result))  # a later stage added a setup
    finally:
        await writer.aclose()
    assert await repo.get_symbol_results("run-1") == [result]
    assert await count_rows(db, DecisionRow) == 2


async def test_batches_reuse_one_compiled_statement_per_table(db: Database, repo: Repository) -> None:
    """executemany with the same SQL text each time: a batch of any size is one statement per table."""
    await repo.create_run(make_run("run-1"))
    log = StatementLog(db)
    for n in (1, 7, 30):
        results = [make_symbol_result(f"S{n}-{i}") for i in range(n)]
        await repo.write_batch([SymbolResultWrite(r) for r in results])
    inserts = [s for s in log.statements if s.startswith("INSERT INTO decisions")]
    assert len(inserts) == 3 and len(set(inserts)) == 1
    assert await count_rows(db, DecisionRow) == 2 * 38


async def test_risk_text_is_json_dumps_and_the_same_in_trades_and_decisions(
    db: Database, repo: Repository
) -> None:
    """The risk JSON is encoded once for both tables, as the text ``json.dumps`` gives: stored payloads
    stay byte-identical to what encoding each column separately gave (the "same stored rows" check)."""
    await repo.create_run(make_run("run-1"))
    records = [make_trade("s-1"), make_trade("s-2")]
    await repo.write_batch([RecordsWrite("run-1", [], records)])
    async with db.engine.connect() as conn:
        decided = dict((await conn.execute(text("select setup_id, cast(risk as text) from decisions"))).all())
        traded = dict((await conn.execute(text("select id, cast(risk as text) from trades"))).all())
    expected = {r.setup.id: json.dumps(r.risk.model_dump(mode="json"), allow_nan=False) for r in records}
    assert decided == traded == expected
