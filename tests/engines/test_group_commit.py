"""The engine's group-commit writer: shared commits, per-caller fault isolation, FIFO close."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from jax_assistant.domain import AuditEvent
from jax_assistant.engines.writer import GroupCommitWriter
from jax_assistant.storage.repository import AuditWrite, WriteOp


class RecordingRepo:
    """Stands in for the repository: records each batch, fails batches holding a poisoned id."""

    def __init__(self, poison: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.poison = poison

    async def write_batch(self, ops: Sequence[WriteOp]) -> None:
        await asyncio.sleep(0.001)  # a commit takes time, so later writers queue up behind it
        ids = [op.event.id for op in ops if isinstance(op, AuditWrite)]
        if self.poison in ids:
            raise OSError(f"cannot write {self.poison}")
        self.batches.append(ids)


def op(i: int) -> AuditWrite:
    return AuditWrite(AuditEvent(id=f"a{i}", correlation_id="c", action="x", outcome="success"), f"k{i}")


async def test_concurrent_writes_share_commits_and_all_land() -> None:
    repo = RecordingRepo()
    writer = GroupCommitWriter(repo)  # type: ignore[arg-type]
    await asyncio.gather(*(writer.write(op(i)) for i in range(100)))
    written = [i for b in repo.batches for i in b]
    assert sorted(written) == sorted(f"a{i}" for i in range(100))
    assert len(repo.batches) < 10  # 100 writers, a handful of commits
    await writer.aclose()


async def test_a_bad_write_fails_only_its_caller() -> None:
    repo = RecordingRepo(poison="a7")
    writer = GroupCommitWriter(repo)  # type: ignore[arg-type]
    results = await asyncio.gather(*(writer.write(op(i)) for i in range(20)), return_exceptions=True)
    failures = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failures == [7]
    assert isinstance(results[7], OSError)
    assert sorted(i for b in repo.batches for i in b) == sorted(f"a{i}" for i in range(20) if i != 7)
    await writer.aclose()


async def test_ops_of_one_write_commit_together() -> None:
    repo = RecordingRepo(poison="a2")
    writer = GroupCommitWriter(repo)  # type: ignore[arg-type]
    with pytest.raises(OSError):
        await writer.write(op(1), op(2))  # a1 must not land without a2
    assert all("a1" not in b for b in repo.batches)
    await writer.aclose()


async def test_close_waits_for_queued_writes() -> None:
    repo = RecordingRepo()
    writer = GroupCommitWriter(repo)  # type: ignore[arg-type]
    tasks = [asyncio.create_task(writer.write(op(i))) for i in range(30)]
    await asyncio.sleep(0)
    await writer.aclose()
    assert sum(len(b) for b in repo.batches) == 30
    await asyncio.gather(*tasks)


async def test_behind_writes_are_claimed_by_their_keys_next_write() -> None:
    repo = RecordingRepo()
    writer = GroupCommitWriter(repo)  # type: ignore[arg-type]
    writer.write_behind("S", op(1))
    writer.write_behind("S", op(2))
    writer.write_behind("T", op(3))
    await writer.write(op(4), keys=["S"])
    # S's queued behind writes went out with (or before) its own write, in their order.
    batch = next(b for b in repo.batches if "a4" in b)
    assert [i for i in batch if i in ("a1", "a2", "a4")] == ["a1", "a2", "a4"]
    await writer.aclose()
    assert sorted(i for b in repo.batches for i in b) == ["a1", "a2", "a3", "a4"]  # T's flushed on close


async def test_a_failed_behind_write_fails_its_keys_next_write_and_nothing_of_it_lands() -> None:
    repo = RecordingRepo(poison="a1")
    writer = GroupCommitWriter(repo)  # type: ignore[arg-type]
    writer.write_behind("S", op(1))
    await asyncio.sleep(0.01)  # the behind write is committed (and fails) before S writes again
    with pytest.raises(OSError, match="a1"):
        await writer.write(op(2), keys=["S"])
    await writer.write(op(3), keys=["S"])  # the error is reported once, to S's next write
    await writer.aclose()
    assert sorted(i for b in repo.batches for i in b) == ["a3"]


async def test_a_behind_write_claimed_while_queued_fails_with_the_write_that_took_it() -> None:
    repo = RecordingRepo(poison="a1")
    writer = GroupCommitWriter(repo)  # type: ignore[arg-type]
    writer.write_behind("S", op(1))
    with pytest.raises(OSError, match="a1"):
        await writer.write(op(2), keys=["S"])  # took a1 into its own atomic write: a2 must not land
    await writer.aclose()
    assert all("a2" not in b for b in repo.batches)


async def test_a_keys_queued_behind_writes_share_one_entry_and_commit_together() -> None:
    repo = RecordingRepo(poison="a2")
    writer = GroupCommitWriter(repo)  # type: ignore[arg-type]
    writer.write_behind("S", op(1))
    writer.write_behind("T", op(3))
    writer.write_behind("S", op(2))  # joins S's queued write: a1 must not land without a2
    assert len(writer._pending) == 2
    await asyncio.sleep(0.1)  # committed behind (after the age bound); S's entry fails on its own
    with pytest.raises(OSError, match="a2"):
        await writer.write(op(4), keys=["S"])
    await writer.aclose()
    assert sorted(i for b in repo.batches for i in b) == ["a3"]
