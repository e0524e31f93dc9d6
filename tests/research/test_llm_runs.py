"""The LLM provider through real pipeline runs: prompt, tokens and cost, budgets, the ledger, the key."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.fakes.openai import FakeOpenAI
from tests.research.conftest import ALLOCATED, make_settings, run_once

from jax_assistant.domain import SymbolStatus, utc_now
from jax_assistant.orchestrator import Orchestrator
from jax_assistant.research.store import ResearchStore
from jax_assistant.storage.tables import ResearchSpendRow

pytestmark = pytest.mark.realdata

KEY = "sk-test-very-secret-key-123"


def llm_cfg(server: FakeOpenAI, *, providers: list[str] | None = None, **llm: Any) -> dict[str, Any]:
    return {
        "providers": providers or ["llm", "builtin"],
        "llm": {
            "base_url": server.url + "/v1",
            "model": "fake-model",
            "api_key": KEY,
            "timeout_s": 5.0,
            "retry": {"attempts": 1},
            "price_per_1k_prompt": 0.01,
            "price_per_1k_completion": 0.02,
            **llm,
        },
    }


async def test_llm_research_is_prompted_with_facts_and_spend_is_recorded(
    research_data: Path, db_url: str, openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Orchestrator(make_settings(research_data, db_url, llm_cfg(openai))) as orch:
        ran = await run_once(orch, correlation_id="corr-llm-1")
        assert orch.db is not None and orch.repository is not None
        spend = await ResearchStore(orch.db).spend(run_id=ran.outcome.run.id)
        today = await ResearchStore(orch.db).spend(day=utc_now().date())
        audit = await orch.repository.list_audit(run_id=ran.outcome.run.id)
        async with orch.db.engine.connect() as conn:
            rows = (await conn.execute(select(ResearchSpendRow.__table__))).all()
    assert len(openai.requests) == len(ALLOCATED)
    total_tokens = total_cost = 0.0
    for t in ran.allocated():
        prov = t.setup.research_provenance
        bundle = t.setup.research
        assert prov is not None and bundle is not None and prov.provider == "llm" and prov.source == "fresh"
        assert bundle.summary == f"LLM view of {t.setup.symbol}."
        assert bundle.metrics["last_close"] > 0  # numbers are the builtin facts, not the model's
        assert prov.tokens > 100
        total_tokens += prov.tokens
        total_cost += prov.cost
    for r in openai.requests:
        assert r.path == "/v1/chat/completions"
        assert r.headers["authorization"] == f"Bearer {KEY}"
        assert r.headers["x-correlation-id"] == "corr-llm-1" and "traceparent" in r.headers
        user = r.body["messages"][1]["content"]
        assert "Facts:" in user and "volatility_20d_pct" in user and "What are the key risks now?" in user
        prompt_tokens = sum(len(m["content"]) for m in r.body["messages"]) // 4
        assert prompt_tokens > 0
    # The ledger holds one row per call; run and day totals agree with the provenance.
    assert len(rows) == len(ALLOCATED)
    assert spend.calls == today.calls == len(ALLOCATED)
    assert spend.tokens == today.tokens == total_tokens
    assert spend.cost == pytest.approx(total_cost)
    expected_cost = sum(r.prompt_tokens / 1000 * 0.01 + r.completion_tokens / 1000 * 0.02 for r in rows)
    assert spend.cost == pytest.approx(expected_cost)
    # The key is never logged, audited or stored.
    assert KEY not in caplog.text
    assert all(KEY not in json.dumps(a.to_contract()) for a in audit)
    assert all(KEY not in json.dumps(t.setup.to_contract()) for t in ran.allocated())
    assert KEY not in repr(orch.settings) and KEY not in orch.settings.model_dump_json()


async def test_run_budget_stops_research_not_the_pipeline(
    research_data: Path, db_url: str, openai: FakeOpenAI
) -> None:
    cfg = llm_cfg(openai, providers=["llm"], max_tokens=100, budget={"run_tokens": 2000, "run_cost": None})
    settings = make_settings(research_data, db_url, cfg, engine={"concurrency": 1})
    async with Orchestrator(settings) as orch:
        ran = await run_once(orch)
        assert orch.db is not None
        spend = await ResearchStore(orch.db).spend(run_id=ran.outcome.run.id)
    answered = [t for t in ran.allocated() if t.setup.research is not None]
    stopped = [t for t in ran.allocated() if t.setup.research is None]
    assert 1 <= len(answered) < len(ALLOCATED) and stopped
    assert len(openai.requests) == len(answered)  # no call was made once the budget could not cover it
    assert spend.tokens <= 2000  # never past the budget
    for t in stopped:
        prov = t.setup.research_provenance
        assert prov is not None and prov.status == "unavailable"
        assert "run token budget spent" in (prov.reason or "") and "research stopped" in (prov.reason or "")
    by = ran.by_symbol()
    assert {by[t.setup.symbol].status for t in stopped} == {SymbolStatus.DEGRADED}
    assert ran.outcome.run.status.value == "completed"
    assert all(
        "persist" in [s.stage for s in r.stages] for r in ran.results if r.status is not SymbolStatus.FAILED
    )


async def test_daily_budget_is_read_back_from_the_ledger(
    research_data: Path, db_url: str, openai: FakeOpenAI
) -> None:
    async with Orchestrator(make_settings(research_data, db_url, llm_cfg(openai))) as orch:
        await run_once(orch, ["JNJ"])
        assert orch.db is not None
        spent = await ResearchStore(orch.db).spend(day=utc_now().date())
    assert spent.calls == 1
    calls_before = len(openai.requests)
    # A new orchestrator (a new process) learns today's spend from the ledger and refuses the next call.
    cfg = {**llm_cfg(openai, budget={"day_tokens": spent.tokens + 10}), "cache_ttl_s": 0}  # no cached answer
    async with Orchestrator(make_settings(research_data, db_url, cfg)) as orch:
        ran = await run_once(orch, ["JNJ"])
    (trade,) = ran.allocated()
    prov = trade.setup.research_provenance
    assert prov is not None and prov.provider == "builtin"  # fell back, free
    assert "daily token budget spent" in prov.fallbacks[0]
    assert len(openai.requests) == calls_before


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("500", "HTTP 500"),
        ("hang", "no answer within"),
        ("malformed", "malformed JSON"),
        ("error", "not a chat completion"),
        ("401", "HTTP 401"),
    ],
)
async def test_llm_failures_fall_back_and_cost_nothing(
    research_data: Path, sqlite_db: str, openai: FakeOpenAI, behaviour: str, reason: str
) -> None:
    openai.default = behaviour
    async with Orchestrator(make_settings(research_data, sqlite_db, llm_cfg(openai, timeout_s=0.5))) as orch:
        ran = await run_once(orch, ["JNJ", "XOM"])
        assert orch.db is not None
        spend = await ResearchStore(orch.db).spend(run_id=ran.outcome.run.id)
    for t in ran.allocated():
        prov = t.setup.research_provenance
        assert prov is not None and prov.provider == "builtin" and reason in prov.fallbacks[0], prov
        assert prov.tokens == 0 and prov.cost == 0
    assert spend.calls == 0 and spend.tokens == 0
