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
