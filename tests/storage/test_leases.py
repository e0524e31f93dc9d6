"""Run leases: one owner per run, taken by an atomic compare-and-set, derived `interrupted` status."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update
from tests.storage.factories import make_run

from jax_assistant.domain import RunStatus, utc_now
from jax_assistant.storage import Database, Repository, open_database
from jax_assistant.storage.tables import RunRow


async def expire(db: Database, run_id: str) -> None:
    """Move the lease expiry into the past, as a dead owner's lease ends up."""
    async with db.transaction() as conn:
        await conn.execute(
            update(RunRow)
            .where(RunRow.id == run_id)
            .values(lease_expires_at=utc_now() - timedelta(seconds=1))
        )


async def test_a_live_lease_cannot_be_taken(db: Database, repo: Repository) -> None:
    await repo.create_run(make_run(), lease_owner="a", lease_ttl_s=60)
    assert await repo.acquire_lease("run-1", "b", 60) is False
    assert await repo.renew_lease("run-1", "b", 60) is False
    assert await repo.release_lease("run-1", "b") is False
    assert (await repo.lease_of("run-1"))[0] == "a"
    assert await repo.acquire_lease("run-1", "a", 60) is True  # the owner may re-take its own
    stored = await repo.get_run("run-1")
    assert stored is not None and stored.status is RunStatus.RUNNING
    assert await repo.list_interrupted_runs() == []


async def test_an_expired_lease_reads_interrupted_and_can_be_taken(db: Database, repo: Repository) -> None:
    await repo.create_run(make_run(), lease_owner="a", lease_ttl_s=60)
    await expire(db, "run-1")
    stored = await repo.get_run("run-1")
    assert stored is not None and stored.status is RunStatus.INTERRUPTED
    assert [r.id for r in await repo.list_interrupted_runs()] == ["run-1"]
    assert await repo.acquire_lease("run-1", "b", 60) is True
    assert await repo.renew_lease("run-1", "a", 60) is False  # the old owner lost it
    assert (await repo.lease_of("run-1"))[0] == "b"
    stored = await repo.get_run("run-1")
    assert stored is not None and stored.status is RunStatus.RUNNING


async def test_release_makes_the_run_resumable_at_once(repo: Repository) -> None:
    await repo.create_run(make_run(), lease_owner="a", lease_ttl_s=60)
    assert await repo.release_lease("run-1", "a") is True
    assert await repo.lease_of("run-1") == (None, None)
    assert [r.status for r in await repo.list_interrupted_runs()] == [RunStatus.INTERRUPTED]


async def test_a_completed_run_has_no_lease_to_take(repo: Repository) -> None:
    await repo.create_run(make_run(status=RunStatus.COMPLETED))
    assert await repo.acquire_lease("run-1", "a", 60) is False


async def test_update_run_never_touches_the_lease(repo: Repository) -> None:
    run = make_run()
    await repo.create_run(run, lease_owner="a", lease_ttl_s=60)
    await repo.update_run(run.model_copy(update={"counts": {"symbols": 2}}))
    assert (await repo.lease_of("run-1"))[0] == "a"
    # A run read back as interrupted is stored as running, never as the derived status.
    await repo.update_run(run.model_copy(update={"status": RunStatus.INTERRUPTED}))
    stored = await repo.get_run("run-1")
    assert stored is not None and stored.status is RunStatus.RUNNING


async def test_exactly_one_of_many_concurrent_claims_wins(database_url: str) -> None:
    """Separate engines (separate connections, as separate processes have) race for one lease."""
    dbs = [await open_database(database_url) for _ in range(6)]
    try:
        repos = [Repository(d) for d in dbs]
        await repos[0].create_run(make_run())  # no lease: interrupted
        wins = await asyncio.gather(
            *(r.acquire_lease("run-1", f"owner-{i}", 60) for i, r in enumerate(repos))
        )
        assert sum(wins) == 1
        winner = wins.index(True)
        assert (await repos[0].lease_of("run-1"))[0] == f"owner-{winner}"
    finally:
        for d in dbs:
            await d.close()
