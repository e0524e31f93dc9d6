"""The memory outbox on both backends: order, idempotency, outage and recovery.

Memory itself is a real HTTP backend (the ``hindsight`` client) pointed at the fake Hindsight server,
whose fault switch plays the outage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.api.helpers import LiveServer
from tests.fakes.hindsight import FakeHindsight, create_fake_hindsight
from tests.pgutil import backend_url

from jax_assistant.memory import Memory, MemoryItem, MemorySource
from jax_assistant.memory.hindsight import HindsightBackend
from jax_assistant.memory.outbox import MemoryOutbox, outbox_status
from jax_assistant.storage import Database, open_database
from jax_assistant.storage.tables import MemoryOutboxRow

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
T0 = datetime(2024, 5, 1, 13, 30, tzinfo=UTC)


def item(n: int, summary: str | None = None) -> MemoryItem:
    doc = f"decision:SYM{n % 3}:ev{n}"
    return MemoryItem(
        id=doc,
        document_id=doc,
        ts=T0 + timedelta(days=n),
        type="decision",
        symbol=f"SYM{n % 3}",
        tags=["decision"],
        summary=summary or f"decision {n}",
        data={"n": n},
        source=MemorySource(system="jax-orchestrator", ref="run_x"),
    )


@dataclass
class Rig:
    db: Database
    outbox: MemoryOutbox
    fake: FakeHindsight
    memory: Memory


@pytest.fixture(params=BACKENDS)
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    fake = FakeHindsight()
    server = LiveServer(create_fake_hindsight(fake))
    await server.start()
    async with backend_url(request.param, tmp_path) as url:
        db = await open_database(url)
        memory = Memory(HindsightBackend(server.url, timeout_s=1.0))
        try:
            yield Rig(db, MemoryOutbox(db), fake, memory)
        finally:
            await memory.close()
            await db.close()
            await server.stop()


def retained_docs(fake: FakeHindsight) -> list[str]:
    """Document ids in the order the fake received them (every retain request, flattened)."""
    return [
        i["document_id"]
        for method, path, _, body in fake.requests
        if method == "POST" and path.endswith("/memories")
        for i in body["items"]
    ]


async def test_enqueue_keeps_one_row_per_document_and_its_place(rig: Rig) -> None:
    await rig.outbox.enqueue("trade_decisions", [item(1), item(2)], error="down", correlation_id="corr_a")
    await rig.outbox.enqueue("trade_decisions", [item(1, "decision 1 revised"), item(3)], error="down again")
    assert await rig.outbox.depth() == 3
    pending = await rig.outbox.pending()
    assert [(b, i.document_id) for b, i in pending] == [
        ("trade_decisions", "decision:SYM1:ev1"),
        ("trade_decisions", "decision:SYM2:ev2"),
        ("trade_decisions", "decision:SYM0:ev3"),
    ]
    assert pending[0][1].summary == "decision 1 revised"  # the newest version of the document waits
    async with rig.db.engine.connect() as conn:
        rows = {r.document_id: r for r in (await conn.execute(select(MemoryOutboxRow))).all()}
    assert rows["decision:SYM1:ev1"].attempts == 2 and rows["decision:SYM1:ev1"].last_error == "down again"


async def test_an_item_without_a_stable_key_is_refused(rig: Rig) -> None:
    keyless = item(1).model_copy(update={"id": None, "document_id": None})
    with pytest.raises(ValueError, match="document_id"):
        await rig.outbox.enqueue("trade_decisions", [keyless])
    assert await rig.outbox.depth() == 0


async def test_drain_delivers_in_order_across_banks_and_empties_the_table(rig: Rig) -> None:
    await rig.outbox.enqueue("trade_decisions", [item(1), item(2)])
    await rig.outbox.enqueue("signals", [item(3)])
    await rig.outbox.enqueue("trade_decisions", [item(4)])
    report = await rig.outbox.drain(rig.memory)
    assert (report.retained, report.remaining, report.error) == (4, 0, None)
    assert report.banks == {"trade_decisions": 3, "signals": 1}
    assert retained_docs(rig.fake) == [item(n).document_id for n in (1, 2, 3, 4)]
    assert await rig.outbox.depth() == 0
    assert await outbox_status(_Owner(rig)) == {"enabled": True, "depth": 0}


async def test_an_outage_keeps_everything_and_recovery_delivers_each_item_once(rig: Rig) -> None:
    await rig.outbox.enqueue("trade_decisions", [item(n) for n in range(1, 6)])
    rig.fake.faults.status = 503
    report = await rig.outbox.drain(rig.memory)
    assert report.retained == 0 and report.remaining == 5 and "503" in (report.error or "")
    assert rig.fake.units == {}
    rig.fake.faults.clear()
    report = await rig.outbox.drain(rig.memory)
    assert (report.retained, report.remaining) == (5, 0)
    again = await rig.outbox.drain(rig.memory)  # nothing left: nothing sent twice
    assert again.retained == 0
    docs = sorted(u.document_id or "" for u in rig.fake.units.values())
    assert docs == sorted(item(n).document_id or "" for n in range(1, 6))


async def test_a_drain_replayed_after_a_crash_does_not_duplicate(rig: Rig) -> None:
    # The backend accepted the batch but the process died before deleting the rows: the rows are
    # retained again, and their document ids make that a replacement, not a second memory.
    await rig.outbox.enqueue("trade_decisions", [item(1), item(2)])
    await rig.memory.retain_many([i for _, i in await rig.outbox.pending()], bank="trade_decisions")
    report = await rig.outbox.drain(rig.memory)
    assert report.retained == 2
    assert sorted(u.document_id or "" for u in rig.fake.units.values()) == [
        "decision:SYM1:ev1",
        "decision:SYM2:ev2",
    ]


class _Owner:
    def __init__(self, rig: Rig) -> None:
        self.memory: Memory | None = rig.memory
        self.memory_outbox: MemoryOutbox | None = rig.outbox
