"""On a SQLite file every write of a run goes through the one writer thread: the run-state and lease
updates and the compaction too, not a second stream of transactions on the aiosqlite connection
that would fight the group commits for SQLite's write lock. And ``encode_json`` (what JSON columns
store) stays byte for byte ``json.dumps(..., allow_nan=False)``."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from tests.storage.factories import make_run

from jax_assistant.domain import RunStatus
from jax_assistant.storage import Repository, open_database
from jax_assistant.storage.db import encode_json


async def test_run_state_leases_and_compaction_write_on_the_writer_thread(tmp_path: Path) -> None:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}")
    repo = Repository(db)
    assert db.sync_writer is not None
    async_writes: list[str] = []
    writer_threads: set[str] = set()

    def on_async(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SELECT", "BEGIN DEFERRED")):
            async_writes.append(statement)

    def on_writer(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        writer_threads.add(threading.current_thread().name)

    event.listen(db.engine.sync_engine, "before_cursor_execute", on_async)
    event.listen(db.sync_writer, "before_cursor_execute", on_writer)
    try:
        run = make_run("run-w")
        assert await repo.create_run(run)
        assert await repo.acquire_lease(run.id, "owner-a", 30.0)
        assert not await repo.acquire_lease(run.id, "owner-b", 30.0)  # still one winner
        assert await repo.renew_lease(run.id, "owner-a", 30.0)
        assert not await repo.renew_lease(run.id, "owner-b", 30.0)
        await repo.update_run(run.model_copy(update={"status": RunStatus.COMPLETED}))
        assert await repo.compact_run(run.id) == 0
        assert await repo.release_lease(run.id, "owner-a")
        stored = await repo.get_run(run.id)
        assert stored is not None and stored.status is RunStatus.COMPLETED
        assert async_writes == []
        assert writer_threads == {"jax-sqlite-writer"}
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", on_async)
        event.remove(db.sync_writer, "before_cursor_execute", on_writer)
        await db.close()


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.5e-05, "b": [1, "é→x", None, True, 1e16], "c": {"d": 2.0000000000000027, "e": 'q"\\\n'}},
        "plain",
        12,
        None,
        [],
        {},
        {"1": -0.0, "big": 10**30},
    ],
)
def test_encode_json_is_json_dumps(value: Any) -> None:
    assert encode_json(value) == json.dumps(value, allow_nan=False)


@pytest.mark.parametrize("value", [float("nan"), {"x": [float("inf")]}, -float("inf")])
def test_encode_json_refuses_non_finite_floats(value: Any) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        encode_json(value)


def test_encode_json_errors_and_shared_objects_as_json_dumps() -> None:
    shared = {"x": [1, 2]}
    assert encode_json([shared, shared, {"y": shared}]) == json.dumps([shared, shared, {"y": shared}])
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        encode_json({"a": loop})
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_json({"a": object()})
