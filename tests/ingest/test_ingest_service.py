"""IngestService failure paths: memory down (item failed, nothing stored, a re-send retries) and a run
that cannot start (observations kept, processing says why)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jax_assistant.config import Settings
from jax_assistant.domain.errors import UnavailableError
from jax_assistant.ingest.wiring import ingest_service, run_trigger
from jax_assistant.orchestrator import Orchestrator, PreparedRun

BATCH = {
    "generated_at": "2026-11-27T00:00:00Z",
    "observations": [
        {
            "type": "gap_down",
            "timestamp": "2026-11-27T14:30:00Z",
            "symbol": "ACME.SIM",
            "impact_estimate": -0.9,
        },
        {"type": "news", "timestamp": "2026-11-27T14:30:00Z", "symbol": "BOLT.SIM", "confidence": 0.1},
    ],
}


class FlakyMemory:
    """Stands in for the memory service being unreachable, then back."""

    def __init__(self) -> None:
        self.up = False
        self.items: list[tuple[str | None, Mapping[str, Any]]] = []

    async def retain(self, item: Mapping[str, Any], *, bank: str | None = None) -> str:
        if not self.up:
            raise UnavailableError("memory service unreachable")
        self.items.append((bank, item))
        return f"mem_{len(self.items)}"


async def test_memory_down_fails_the_item_and_a_resend_retries_it(database_url: str) -> None:
    memory = FlakyMemory()
    async with Orchestrator(Settings(database_url=database_url)) as orch:
        service = ingest_service(orch, memory, None)
        first = await service.ingest(BATCH, correlation_id="corr_flaky_1")
        assert [(i.status, i.errors[0].field if i.errors else None) for i in first.items] == [
            ("failed", "memory"),
            ("accepted", None),  # not significant: memory not needed
        ]
        assert first.processing is None and memory.items == []
        memory.up = True
        second = await service.ingest(BATCH, correlation_id="corr_flaky_2")
        assert [i.status for i in second.items] == ["accepted", "duplicate"]
        assert second.items[0].memory_id == "mem_1" and [b for b, _ in memory.items] == ["signals"]
        assert memory.items[0][1]["document_id"] == f"ingest:{second.items[0].key}"
        audit = await orch.repository.list_audit(correlation_id="corr_flaky_1")  # type: ignore[union-attr]
        assert [(a.outcome, a.payload["index"]) for a in audit] == [("error", 0), ("success", 1)]


async def test_a_run_that_cannot_start_keeps_the_observations(database_url: str) -> None:
    async with Orchestrator(Settings(database_url=database_url)) as orch:

        async def start(_: PreparedRun) -> None:
            raise UnavailableError("the run queue is full")

        service = ingest_service(orch, FlakyMemory(), run_trigger(orch, start))
        service.memory.up = True  # type: ignore[union-attr]
        result = await service.ingest(BATCH, correlation_id="corr_nostart")
        assert result.accepted == 2
        assert result.processing is not None and result.processing.run_id is None
        assert result.processing.skipped == "could not start a run: the run queue is full"
        unknown = await service.ingest(
            {
                "generated_at": "2026-11-27T00:00:00Z",
                "observations": [{**BATCH["observations"][0], "symbol": "AAPL"}],
            },  # type: ignore[dict-item]
            correlation_id="corr_unknown",
        )
        assert unknown.processing is not None and "unknown symbol" in (unknown.processing.skipped or "")


async def test_a_resumed_run_keeps_its_pushed_events_and_reruns_identically(database_url: str) -> None:
    """The pushed events live in the run's params: a run resumed from scratch (its row recorded, no stage
    done, as after a crash) sees the same events, and stores the same result as a straight run."""
    from datetime import UTC, datetime

    from jax_assistant.domain import Event
    from jax_assistant.orchestrator import RunRequest

    pushed = [
        Event(
            id="ingest-b",
            symbol="ACME.SIM",
            type="news_headline",
            time=datetime(2025, 6, 27, 15, tzinfo=UTC),
            payload={"source": "ingest"},
        ),
        Event(
            id="ingest-a",
            symbol="BOLT.SIM",
            type="price_gap",
            time=datetime(2025, 6, 27, 14, tzinfo=UTC),
            payload={"source": "ingest", "price": 10.0},
        ),
        Event(
            id="ingest-late", symbol="ACME.SIM", type="earnings", time=datetime(2025, 6, 30, 13, tzinfo=UTC)
        ),
    ]

    def request(run_id: str, events: list[Event]) -> RunRequest:
        return RunRequest(
            symbols=["ACME.SIM", "BOLT.SIM"], run_id=run_id, correlation_id="c", pushed_events=events
        )

    async with Orchestrator(Settings(database_url=database_url)) as orch:
        straight = await orch.start_run(request("run_straight", pushed))
        prepared = orch.prepare_run(request("run_resumed", list(reversed(pushed))))
        assert prepared.run.params["pushedEventsAfterAsOf"] == ["ingest-late"]
        await orch.record_run(prepared)
        resumed = await orch.resume_run("run_resumed")

    def events(outcome: Any) -> dict[str, list[tuple[str, str]]]:
        return {r.symbol: [(e.id, e.type) for e in r.events] for r in outcome.results}

    got = events(resumed)
    assert got == events(straight)
    assert ("ingest-b", "news_headline") in got["ACME.SIM"] and ("ingest-a", "price_gap") in got["BOLT.SIM"]
    assert all(e != "ingest-late" for e, _ in got["ACME.SIM"])  # after the as-of date: never used

    def decisions(outcome: Any) -> list[Any]:
        return [t.model_dump(mode="json", exclude={"created_at"}) for r in outcome.results for t in r.trades]

    assert decisions(resumed) == decisions(straight)
