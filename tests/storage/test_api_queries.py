"""The API's read queries on both backends: filtered, keyset-paginated runs and audit, lookups by
idempotency key, failure reasons and the schema revision (what /runs, /audit, /process and /ready use)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.storage.factories import T0, make_audit
from tests.storage.factories import make_run as base_run

from jax_assistant.domain import Run, RunStatus
from jax_assistant.storage import Repository
from jax_assistant.storage.db import HEAD_REVISION


def make_run(run_id: str, *, symbols: list[str] | None = None, **kw: Any) -> Run:
    run = base_run(run_id, **kw)
    return run.model_copy(update={"symbols": symbols}) if symbols is not None else run


async def test_runs_page_filters_and_keyset(repo: Repository) -> None:
    # Two runs share a start time so the id breaks the tie; one symbol name has LIKE wildcards.
    runs = [
        make_run("run-a", started_at=T0, status=RunStatus.COMPLETED, symbols=["AAPL"]),
        make_run("run-b", started_at=T0 + timedelta(seconds=1), status=RunStatus.FAILED, symbols=["MSFT"]),
        make_run(
            "run-c",
            started_at=T0 + timedelta(seconds=1),
            status=RunStatus.COMPLETED,
            symbols=["AAPL", "BRK_B"],
        ),
        make_run("run-d", started_at=T0 + timedelta(seconds=2), status=RunStatus.RUNNING, symbols=["BRKXB"]),
    ]
    for run in runs:
        assert await repo.create_run(run)
    await repo.create_run(
        make_run("run-e", started_at=T0 + timedelta(seconds=3), symbols=["AAPL"]),
        lease_owner="me",
        lease_ttl_s=600,
    )

    ids = [r.id for r in await repo.list_runs_page(limit=10)]
    assert ids == ["run-e", "run-d", "run-c", "run-b", "run-a"]

    pages, before = [], None
    while True:
        page = await repo.list_runs_page(before=before, limit=2)
        if not page:
            break
        pages.append([r.id for r in page])
        before = (page[-1].started_at, page[-1].id)
    assert pages == [["run-e", "run-d"], ["run-c", "run-b"], ["run-a"]]

    assert [r.id for r in await repo.list_runs_page(symbol="AAPL")] == ["run-e", "run-c", "run-a"]
    assert [r.id for r in await repo.list_runs_page(symbol="BRK_B")] == ["run-c"]  # `_` is literal
    assert [r.id for r in await repo.list_runs_page(symbol="AAP")] == []  # whole symbols only
    assert [r.id for r in await repo.list_runs_page(status=RunStatus.COMPLETED)] == ["run-c", "run-a"]
    # run-d never had a lease: interrupted; run-e holds a live one: running.
    assert [r.id for r in await repo.list_runs_page(status=RunStatus.INTERRUPTED)] == ["run-d"]
    assert [r.id for r in await repo.list_runs_page(status=RunStatus.RUNNING)] == ["run-e"]
    since = await repo.list_runs_page(since=T0 + timedelta(seconds=1), status=RunStatus.COMPLETED)
    assert [r.id for r in since] == ["run-c"]


async def test_audit_page_newest_first_and_lookup_by_key(repo: Repository) -> None:
    assert await repo.create_run(make_run("run-1"))
    for i, seconds in enumerate([0, 5, 5, 9]):
        event = make_audit(f"au-{i}", seconds=seconds, correlation_id="c-1" if i < 3 else "c-2")
        assert await repo.record_audit(event, idempotency_key=f"k-{i}", run_id="run-1" if i else None)
    ids = [e.id for e in await repo.list_audit_page()]
    assert ids == ["au-3", "au-2", "au-1", "au-0"]
    first = await repo.list_audit_page(limit=2)
    rest = await repo.list_audit_page(before=(first[-1].timestamp, first[-1].id), limit=10)
    assert [e.id for e in first + rest] == ids
    assert [e.id for e in await repo.list_audit_page(correlation_id="c-1", run_id="run-1")] == [
        "au-2",
        "au-1",
    ]

    found = await repo.get_audit_by_key("k-2")
    assert found is not None and found[0].id == "au-2" and found[1] == "run-1"
    assert await repo.get_audit_by_key("k-none") is None


async def test_run_failures_and_schema_revision(repo: Repository) -> None:
    for run_id in ("run-ok", "run-bad"):
        assert await repo.create_run(make_run(run_id))
    failed = make_audit("au-f", action="run.failed", outcome="error", error="engine exploded")
    assert await repo.record_audit(failed, idempotency_key="run-bad/run/failed", run_id="run-bad")
    other = make_audit("au-o", action="stage.persist", outcome="error", error="not a run failure")
    assert await repo.record_audit(other, idempotency_key="x", run_id="run-ok")
    assert await repo.run_failures(["run-ok", "run-bad"]) == {"run-bad": "engine exploded"}
    assert await repo.run_failures([]) == {}
    assert await repo.schema_revisions() == [HEAD_REVISION]
