"""Dexter research through real pipeline runs: batching, correlation, cache, fallback, every failure mode."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.dexter import FakeDexter
from tests.research.conftest import ALLOCATED, make_settings, run_once

from jax_assistant.domain import SymbolStatus
from jax_assistant.orchestrator import Orchestrator
from jax_assistant.pipeline.resilience import FakeClock
from jax_assistant.research.questions import FALLBACK

pytestmark = pytest.mark.realdata

NO_RETRY = {"attempts": 1}


def dexter_cfg(server: FakeDexter, *, providers: list[str] | None = None, **dexter: Any) -> dict[str, Any]:
    return {
        "providers": providers or ["dexter", "builtin"],
        "dexter": {"url": server.url, "timeout_s": 5.0, "batch_size": 1, "retry": NO_RETRY, **dexter},
    }


async def test_dexter_answers_batched_with_correlation_and_audit(
    research_data: Path, sqlite_db: str, dexter: FakeDexter
) -> None:
    cfg = dexter_cfg(dexter, batch_size=5, batch_window_s=0.3)
    async with Orchestrator(make_settings(research_data, sqlite_db, cfg, metrics_enabled=True)) as orch:
        ran = await run_once(orch, correlation_id="corr-research-1")
        assert orch.repository is not None
        audit = await orch.repository.list_audit(run_id=ran.outcome.run.id)
        exposition = orch.metrics.render()[0].decode()
    # Research call latency is a dependency histogram, one observation per call.
    series = 'jax_dependency_call_seconds_count{dependency="research.dexter",outcome="success"}'
    assert f"{series} {len(dexter.requests)}.0" in exposition
    allocated = ran.allocated()
    assert {t.setup.symbol for t in allocated} == ALLOCATED
    for t in allocated:
        prov = t.setup.research_provenance
        assert prov is not None and prov.provider == "dexter" and prov.source == "fresh", prov
        assert t.setup.research is not None and t.setup.research.ticker == t.setup.symbol
    # 7 symbols asking the same questions: compare_companies answered them in fewer calls than symbols.
    tickers = [
        tk
        for r in dexter.requests
        if r.body["tool"] == "dexter.compare_companies"
        for tk in r.body["input"]["tickers"]
    ]
    singles = [
        r.body["input"]["ticker"] for r in dexter.requests if r.body["tool"] == "dexter.research_company"
    ]
    assert sorted(tickers + singles) == sorted(ALLOCATED)
    assert len(dexter.requests) < len(ALLOCATED)
    assert max(len(r.body["input"].get("tickers", [])) for r in dexter.requests) == 5
    for r in dexter.requests:
        assert r.headers["x-correlation-id"] == "corr-research-1"
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", r.headers["traceparent"])
    calls = [a for a in audit if a.action == "research.call.dexter"]
    assert len(calls) == len(dexter.requests)
    assert all(a.correlation_id == "corr-research-1" and a.outcome == "success" for a in calls)


async def test_cache_hit_then_invalidated_by_a_new_event(
    research_data: Path, db_url: str, dexter: FakeDexter
) -> None:
    from tests.research.conftest import AS_OF, SYMBOLS

    from jax_assistant.orchestrator import RunRequest

    async with Orchestrator(make_settings(research_data, db_url, dexter_cfg(dexter))) as orch:
        await run_once(orch)
        first = len(dexter.requests)
        assert first == len(ALLOCATED)
        again = await run_once(orch)
        assert len(dexter.requests) == first, "the second run is answered from the cache"
        for t in again.allocated():
            prov = t.setup.research_provenance
            assert prov is not None and (prov.provider, prov.source) == ("dexter", "cached")
            assert t.setup.research is not None and t.setup.research.summary.startswith("Dexter on")
        # A longer lookback brings events for JNJ and JPM (allocated again): their cached answers predate
        # those events, so they are dropped and asked again; nothing else of theirs is served stale.
        outcome = await orch.start_run(RunRequest(symbols=list(SYMBOLS), as_of=AS_OF, lookback=20))
        by = {t.setup.symbol: t for r in outcome.results for t in r.trades if t.risk.allowed}
        asked = [r.body["input"]["ticker"] for r in dexter.requests[first:]]
        for symbol in ("JNJ", "JPM"):
            prov = by[symbol].setup.research_provenance
            assert prov is not None and prov.source == "fresh", (symbol, prov)
            assert symbol in asked
        assert orch.db is not None
        from jax_assistant.research.store import ResearchStore

        store = ResearchStore(orch.db)
        jnj_events = [e for r in outcome.results if r.symbol == "JNJ" for e in r.events]
        newest = max(jnj_events, key=lambda e: (e.time, e.id)).id
        # JNJ's answer was stored again, keyed by the event it now knows about ...
        assert await store.get("JNJ", FALLBACK, "dexter", event_key=newest) is not None
        # ... and an event newer still drops it again; other symbols' answers are kept.
        assert await store.get("JNJ", FALLBACK, "dexter", event_key="ev_even_newer") is None
        assert await store.get("JNJ", FALLBACK, "dexter", event_key=None) is None
        assert await store.get("XOM", FALLBACK, "dexter", event_key=None) is not None


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("500", "HTTP 500"),
        ("malformed", "malformed JSON"),
        ("oversized", "byte cap"),
        ("stream", "byte cap"),
        ("error", "upstream tool failed"),
        ("400", "HTTP 400"),
        ("429", "no Retry-After"),
    ],
)
async def test_failures_fall_back_to_builtin(
    research_data: Path, sqlite_db: str, dexter: FakeDexter, behaviour: str, reason: str
) -> None:
    dexter.default = behaviour
    cfg = dexter_cfg(dexter, max_body_bytes=100_000, retry={"attempts": 3, "initial_backoff_s": 0.01})
    # A breaker that never opens here: this test is about each failure's own handling.
    lenient = {"breakers": {"research.dexter": {"sliding_window_size": 100, "minimum_number_of_calls": 100}}}
    async with Orchestrator(make_settings(research_data, sqlite_db, cfg, resilience=lenient)) as orch:
        ran = await run_once(orch)
        assert orch.repository is not None
        audit = await orch.repository.list_audit(run_id=ran.outcome.run.id)
    for t in ran.allocated():
        prov = t.setup.research_provenance
        assert prov is not None and prov.status == "ok" and prov.provider == "builtin"
        assert len(prov.fallbacks) == 1 and reason in prov.fallbacks[0], prov.fallbacks
        assert t.setup.research is not None
    # 4xx (and a 429 with no Retry-After) and bad bodies are not retried; 5xx are (3 attempts).
    per_symbol = 3 if behaviour == "500" else 1
    assert len(dexter.requests) == per_symbol * len(ALLOCATED)
    failed = [a for a in audit if a.action == "research.provider_failed"]
    assert len(failed) == len(ALLOCATED) and all(reason in (a.error or "") for a in failed)
    assert all(r.status is SymbolStatus.SUCCEEDED for r in ran.results)


async def test_dexter_only_failure_degrades_symbols_but_never_fails_the_run(
    research_data: Path, db_url: str, dexter: FakeDexter
) -> None:
    dexter.default = "500"
    async with Orchestrator(
        make_settings(research_data, db_url, dexter_cfg(dexter, providers=["dexter"]))
    ) as orch:
        ran = await run_once(orch)
        assert orch.repository is not None
        stored = await orch.repository.get_trade(ran.allocated()[0].setup.id)
    by = ran.by_symbol()
    for symbol in ALLOCATED:
        result = by[symbol]
        assert result.status is SymbolStatus.DEGRADED
        stage = next(s for s in result.stages if s.stage == "research")
        assert stage.status.value == "degraded" and "research: unavailable" in (stage.reason or "")
        names = [s.stage for s in result.stages]
        assert names.index("persist") > names.index("research")  # the pipeline went on
    for t in ran.allocated():
        prov = t.setup.research_provenance
        assert prov is not None and prov.status == "unavailable" and "dexter: HTTP 500" in (prov.reason or "")
        assert t.setup.research is None
        assert prov.describe().startswith("research: unavailable")
    others = set(by) - ALLOCATED
    assert all(by[s].status is SymbolStatus.SUCCEEDED for s in others)
    assert stored is not None and stored.setup.research_provenance is not None
    assert stored.setup.research_provenance.status == "unavailable"


async def test_hanging_dexter_times_out_per_call(
    research_data: Path, sqlite_db: str, dexter: FakeDexter
) -> None:
    dexter.default = "hang"
    cfg = dexter_cfg(dexter, timeout_s=0.5)
    t0 = time.monotonic()
    async with Orchestrator(make_settings(research_data, sqlite_db, cfg)) as orch:
        ran = await run_once(orch)
    # Bulkhead of 4 concurrent Dexter calls: 7 symbols need two waves of 0.5 s, not a hang.
    assert time.monotonic() - t0 < 30
    for t in ran.allocated():
        prov = t.setup.research_provenance
        assert prov is not None and prov.provider == "builtin"
        assert "no answer within 0.5s" in prov.fallbacks[0]


async def test_429_with_retry_after_is_retried_after_the_delay(
    research_data: Path, sqlite_db: str, dexter: FakeDexter
) -> None:
    dexter.then("429:1")
    cfg = dexter_cfg(dexter, retry={"attempts": 2, "initial_backoff_s": 0.0, "jitter": 0})
    async with Orchestrator(make_settings(research_data, sqlite_db, cfg, engine={"concurrency": 1})) as orch:
        t0 = time.monotonic()
        ran = await run_once(orch, ["JNJ"])
        elapsed = time.monotonic() - t0
    (trade,) = ran.allocated()
    prov = trade.setup.research_provenance
    assert prov is not None and prov.provider == "dexter" and prov.fallbacks == []
    assert len(dexter.requests) == 2 and elapsed >= 1.0


async def test_breaker_opens_then_recovers(research_data: Path, db_url: str, dexter: FakeDexter) -> None:
    dexter.default = "500"
    resilience = {
        "breakers": {
            "research.dexter": {
                "sliding_window_size": 2,
                "minimum_number_of_calls": 2,
                "failure_rate_threshold": 50,
                "wait_duration_in_open_s": 30.0,
                "permitted_number_of_calls_in_half_open": 1,
            }
        },
        "bulkheads": {"research.dexter": {"max_concurrent": 1}},
    }
    settings = make_settings(
        research_data, db_url, dexter_cfg(dexter), resilience=resilience, engine={"concurrency": 1}
    )
    # Virtual time for the breaker: its wait in open passes when the test says, not with machine load.
    clock = FakeClock()
    async with Orchestrator(settings, clock=clock) as orch:
        ran = await run_once(orch)
        breaker = orch.resilience.breaker("research.dexter")
        assert breaker.state.value == "open"
        # Two failed calls opened it; every later symbol was short-circuited without a call.
        assert len(dexter.requests) == 2
        notes = [
            t.setup.research_provenance.fallbacks[0] for t in ran.allocated() if t.setup.research_provenance
        ]
        assert sum("circuit breaker open" in n for n in notes) == len(ALLOCATED) - 2
        assert orch.status()["resilience"]["breakers"]["research.dexter"]["state"] == "open"

        dexter.default = "ok"
        clock.advance(31.0)  # past the breaker's wait in open: the next call is its half-open trial
        again = await run_once(orch)
        assert breaker.state.value == "closed"
        assert all(
            t.setup.research_provenance is not None and t.setup.research_provenance.provider == "dexter"
            for t in again.allocated()
        )


async def test_batch_answer_missing_a_symbol_falls_back_for_that_symbol_only(
    research_data: Path, sqlite_db: str, dexter: FakeDexter
) -> None:
    dexter.drop_from_batch = {"JNJ"}
    cfg = dexter_cfg(dexter, batch_size=10, batch_window_s=0.5)
    async with Orchestrator(make_settings(research_data, sqlite_db, cfg)) as orch:
        ran = await run_once(orch)
    for t in ran.allocated():
        prov = t.setup.research_provenance
        assert prov is not None
        if t.setup.symbol == "JNJ":
            assert prov.provider == "builtin" and "left out JNJ" in prov.fallbacks[0]
        else:
            assert prov.provider == "dexter"
