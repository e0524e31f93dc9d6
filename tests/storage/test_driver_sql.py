"""The writer thread's batches go out as driver SQL (compiled once, values bound by the column types'
own processors) and store exactly what SQLAlchemy's ``Connection.execute`` would have stored."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event
from sqlalchemy.dialects import sqlite
from tests.storage.factories import T0, make_audit, make_item, make_run, make_stage_result, make_symbol_result

from jax_assistant.domain import StageResult, StageStatus
from jax_assistant.storage import Repository, open_database
from jax_assistant.storage import repository as repository_module
from jax_assistant.storage.db import encode_json
from jax_assistant.storage.repository import (
    AuditRowWrite,
    AuditWrite,
    CheckpointWrite,
    DeadLetterWrite,
    SymbolResultWrite,
    WriteOp,
)
from jax_assistant.storage.tables import UTCDateTime

TABLES = (
    "stage_checkpoints",
    "audit_events",
    "events",
    "trades",
    "decisions",
    "symbol_results",
    "dead_letters",
)


def batch() -> list[WriteOp]:
    item = make_item()
    return [
        CheckpointWrite("run-1", "AAPL", 0, make_stage_result("detect_events"), item),
        CheckpointWrite("run-1", "AAPL", 1, make_stage_result("risk", seq=1), item.model_dump_json()),
        AuditWrite(make_audit("au-1", error="boom"), "k-1", run_id="run-1", symbol="AAPL"),
        AuditRowWrite(
            {
                "id": "au-2",
                "idempotency_key": "k-2",
                "correlation_id": "corr-run-1",
                "run_id": "run-1",
                "symbol": "AAPL",
                "action": "stage.risk",
                "outcome": "success",
                "timestamp": T0,
                "payload": {"symbol": "AAPL", "durationMs": 0.125, "reason": None, "nan": None},
                "error": None,
            }
        ),
        DeadLetterWrite("run-1", "MSFT", "risk", "boom", 3, make_item(symbol="MSFT")),
        SymbolResultWrite(make_symbol_result()),
    ]


async def stored(path: Path, *, driver_sql: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    db = await open_database(f"sqlite+aiosqlite:///{path}")
    repo = Repository(db)
    assert db.sync_writer is not None
    kinds: list[tuple[str, bool]] = []

    def on_execute(_c: Any, _cur: Any, statement: str, _p: Any, context: Any, _many: bool) -> None:
        if statement.startswith("INSERT"):
            kinds.append((statement.split()[2], context.compiled is None))

    if not driver_sql:  # what the writer did before: SQLAlchemy's own parameter handling
        monkeypatch.setattr(
            Repository, "_execute_many", lambda _self, conn, stmt, rows: Connection.execute(conn, stmt, rows)
        )
    monkeypatch.setattr(repository_module, "utc_now", lambda: T0)
    event.listen(db.sync_writer, "before_cursor_execute", on_execute)
    try:
        await repo.create_run(make_run())
        await repo.write_batch(batch())
        await repo.write_batch(batch())  # again: the cached forms, and the upserts' update branch
    finally:
        event.remove(db.sync_writer, "before_cursor_execute", on_execute)
        monkeypatch.undo()
        await db.close()
    hot = [driver for table, driver in kinds if table in ("stage_checkpoints", "audit_events")]
    assert hot and all(hot) == driver_sql
    with sqlite3.connect(path) as conn:
        # typeof() too: the same text, not merely values that compare equal.
        return {
            t: conn.execute(
                f"SELECT *, {', '.join(f'typeof({c[1]})' for c in cols(conn, t))} FROM {t}"
            ).fetchall()
            for t in TABLES
        }


def cols(conn: sqlite3.Connection, table: str) -> list[Any]:
    return conn.execute(f"PRAGMA table_info({table})").fetchall()


async def test_driver_sql_stores_the_same_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = await stored(tmp_path / "fast.db", driver_sql=True, monkeypatch=monkeypatch)
    slow = await stored(tmp_path / "slow.db", driver_sql=False, monkeypatch=monkeypatch)
    assert all(fast[t] for t in TABLES)
    assert fast == slow


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 3, 7, 52, 51, 524208, tzinfo=UTC),
        datetime(2026, 12, 3, 7, 52, 51, tzinfo=UTC),  # no microseconds: still six digits
        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 12, 3, 9, 52, 51, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 12, 3, 7, 52, 51, 1),  # naive: taken as UTC
        None,
    ],
)
def test_utc_shortcut_gives_sqlalchemys_text(value: datetime | None) -> None:
    processor = UTCDateTime()._cached_bind_processor(sqlite.dialect())
    assert processor is not None
    assert repository_module._sqlite_utc_text(processor)(value) == processor(value)


@pytest.mark.parametrize(
    "result",
    [
        make_stage_result("detect_events"),
        make_stage_result("risk", StageStatus.SHORT_CIRCUITED, seq=3),
        StageResult(
            stage='é"x\\n',
            status=StageStatus.FAILED,
            started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds: none in the text
            duration_ms=1e16,
            attempts=0,
            error='boom → "quoted"\n',
            reason="r",
        ),
        StageResult(stage="s", status=StageStatus.OK, started_at=T0, duration_ms=1.5e-05),
        # Not the engine's kind of result: the dump itself.
        StageResult(
            stage="s",
            status=StageStatus.OK,
            started_at=T0.astimezone(timezone(timedelta(hours=-5))),
            duration_ms=2,
        ),
        StageResult.model_construct(
            stage="s", status=StageStatus.OK, started_at=T0, duration_ms=3, attempts=1
        ),
    ],
)
def test_stage_result_text_is_the_encoded_dump(result: StageResult) -> None:
    expected = encode_json(result.model_dump(mode="json"))
    assert encode_json(repository_module._stage_result_json(result)) == expected


@pytest.mark.parametrize("stages", ["engine", "none", "mixed"])
def test_symbol_result_stages_text_is_the_encoded_dump(stages: str) -> None:
    result = make_symbol_result()
    if stages == "none":
        result = result.model_copy(update={"stages": []})
    elif stages == "mixed":  # one result not of the engine's kind: the whole list is dumped
        odd = result.stages[0].model_copy(update={"started_at": T0.astimezone(timezone(timedelta(hours=1)))})
        result = result.model_copy(update={"stages": [odd, *result.stages[1:]]})
    values = repository_module._symbol_result_values(result)
    assert encode_json(values["stages"]) == encode_json(result.model_dump(mode="json")["stages"])
    assert values["data_issues"] == result.data_issues
