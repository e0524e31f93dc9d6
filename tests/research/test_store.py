"""The research cache and spend ledger on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest

from jax_assistant.domain import ResearchBundle
from jax_assistant.research.store import ResearchStore, question_key
from jax_assistant.storage import Database, open_database

Q = ["What are the key risks now?"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await open_database(db_url)
    try:
        yield database
    finally:
        await database.close()


def bundle(symbol: str, text: str = "s") -> ResearchBundle:
    return ResearchBundle(ticker=symbol, summary=text, key_points=["a"], metrics={"x": 1.5}, raw_markdown="m")


async def test_cache_round_trip_ttl_and_replacement(db: Database) -> None:
    clock = Clock()
    store = ResearchStore(db, now=clock)
    assert await store.get("AAPL", Q, "dexter", event_key=None) is None
    await store.put("AAPL", Q, "dexter", bundle("AAPL"), event_key="ev1", ttl_s=60, tokens=12, cost=0.5)
    hit = await store.get("AAPL", Q, "dexter", event_key="ev1")
    assert hit is not None and hit.bundle == bundle("AAPL") and (hit.tokens, hit.cost) == (12, 0.5)
    # Keyed by provider and question set too.
    assert await store.get("AAPL", Q, "llm", event_key="ev1") is None
    assert await store.get("AAPL", ["other"], "dexter", event_key="ev1") is None
    # Same key again: replaced, not duplicated.
    await store.put("AAPL", Q, "dexter", bundle("AAPL", "new"), event_key="ev1", ttl_s=60)
    hit = await store.get("AAPL", Q, "dexter", event_key="ev1")
    assert hit is not None and hit.bundle.summary == "new"
    clock.now += timedelta(seconds=61)
    assert await store.get("AAPL", Q, "dexter", event_key="ev1") is None  # expired


async def test_new_event_invalidates_every_answer_of_the_symbol(db: Database) -> None:
    store = ResearchStore(db)
    await store.put("AAPL", Q, "dexter", bundle("AAPL"), event_key="ev1", ttl_s=600)
    await store.put("AAPL", ["q2"], "llm", bundle("AAPL"), event_key="ev1", ttl_s=600)
    await store.put("MSFT", Q, "dexter", bundle("MSFT"), event_key="ev9", ttl_s=600)
    # No event known now: the answer stands.
    assert await store.get("AAPL", Q, "dexter", event_key=None) is not None
    assert await store.get("AAPL", Q, "dexter", event_key="ev2") is None
    assert await store.get("AAPL", ["q2"], "llm", event_key="ev1") is None  # dropped with the rest
    assert await store.get("MSFT", Q, "dexter", event_key="ev9") is not None


async def test_spend_ledger_sums_by_day_and_run(db: Database) -> None:
    clock = Clock()
    store = ResearchStore(db, now=clock)
    await store.record_spend(
        run_id="r1", symbol="A", provider="llm", prompt_tokens=100, completion_tokens=20, cost=0.01
    )
    await store.record_spend(
        run_id="r2", symbol="B", provider="llm", prompt_tokens=50, completion_tokens=5, cost=0.02
    )
    clock.now += timedelta(days=1)
    await store.record_spend(
        run_id="r2", symbol="C", provider="llm", prompt_tokens=1, completion_tokens=1, cost=1.0
    )
    day1 = await store.spend(day=date(2026, 12, 1))
    assert (day1.calls, day1.tokens) == (2, 175) and day1.cost == pytest.approx(0.03)
    r2 = await store.spend(run_id="r2")
    assert (r2.calls, r2.tokens) == (2, 57) and r2.cost == pytest.approx(1.02)
    assert (await store.spend(day=date(2026, 11, 30))).calls == 0


def test_question_key_depends_on_order_and_text() -> None:
    assert question_key(["a", "b"]) != question_key(["b", "a"])
    assert question_key(["a"]) == question_key(["a"])
