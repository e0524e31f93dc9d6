"""The optional LLM reasoner against a real OpenAI-compatible server on loopback.

It adds ``llm_insight`` beliefs read from the deterministic track records, caps their confidence by
the evidence behind them, and falls back to the local beliefs - saying why - on every way a model or
its endpoint can fail. The weights never depend on it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path

import pytest
from tests.fakes.openai import FakeReflectionLLM
from typer.testing import CliRunner

from jax_assistant.cli import app
from jax_assistant.config import Settings
from jax_assistant.learning.reasoner import (
    LLM_BELIEF_TYPE,
    LLMReasoner,
    LLMReasonerConfig,
    ReasonerOutcome,
    evidence_cap,
)
from jax_assistant.learning.settings import LearningConfig
from jax_assistant.memory.beliefs import Belief, OutcomeEvidence, reflect_outcomes
from jax_assistant.memory.facade import open_memory
from jax_assistant.pipeline.policy import RetryPolicy

AS_OF = date(2015, 9, 30)


def _beliefs() -> list[Belief]:
    # 12 breakout trades (4 wins) and 3 gap trades (2 wins) on two symbols: real-looking track records.
    rs = [2.0, -1.0, -1.0, 1.5, -1.0, -1.0, 2.0, -1.0, -1.0, 1.0, -1.0, -1.0]
    evidence = [
        OutcomeEvidence(
            setup_id=f"s{i}",
            strategy_id="breakout",
            symbol="AAPL" if i % 2 else "MSFT",
            event_type="volume_spike",
            exit_on=date(2015, 7, 1 + i),
            r_multiple=r,
        )
        for i, r in enumerate(rs)
    ] + [
        OutcomeEvidence(
            setup_id=f"g{i}",
            strategy_id="gap_fade",
            symbol="AAPL",
            exit_on=date(2015, 8, 3 + i),
            r_multiple=r,
        )
        for i, r in enumerate([1.2, 0.8, -1.0])
    ]
    return reflect_outcomes(evidence, as_of=AS_OF, window_days=365)


def _reasoner(fake: FakeReflectionLLM, **overrides: object) -> LLMReasoner:
    retry = RetryPolicy(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, retry_on=["TransientError"])
    config = LLMReasonerConfig.model_validate(
        {"base_url": f"{fake.url}/v1", "api_key": "sk-test-secret", "model": "fake-model", "retry": retry}
        | overrides
    )
    return LLMReasoner(config)


async def _reflect(fake: FakeReflectionLLM, **overrides: object) -> ReasonerOutcome:
    reasoner = _reasoner(fake, **overrides)
    try:
        return await reasoner.reflect(_beliefs(), as_of=AS_OF, correlation_id="corr-reflect-1")
    finally:
        await reasoner.aclose()


async def test_insights_cite_shown_evidence_with_capped_confidence() -> None:
    beliefs = {b.id: b for b in _beliefs()}
    with FakeReflectionLLM(answers=2, cite=2, confidence=0.99) as fake:
        outcome = await _reflect(fake)
        sent = fake.requests[0]
    assert outcome.reasoner == "llm" and outcome.fallback_reason is None
    assert len(outcome.insights) == 2
    for item in outcome.insights:
        data = item.data or {}
        assert data["belief_type"] == LLM_BELIEF_TYPE and data["reasoner"] == "llm"
        assert set(data["evidence_ids"]) <= beliefs.keys()
        trades = max(beliefs[i].record.sample_size for i in data["evidence_ids"])
        # The model said 0.99; the evidence allows less, and the stated value is kept beside it.
        assert data["confidence"] == evidence_cap(trades) < 0.99
        assert data["stated_confidence"] == 0.99
        assert item.document_id and item.document_id.startswith("belief:llm_insight:2015-09-30:")
    # The documented request: bearer key, model, temperature 0, the track records in the prompt,
    # and the correlation id with a W3C traceparent.
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test-secret"
    assert sent.headers["x-correlation-id"] == "corr-reflect-1" and sent.headers["traceparent"].startswith(
        "00-"
    )
    assert sent.body["model"] == "fake-model" and sent.body["temperature"] == 0
    prompt = next(m["content"] for m in sent.body["messages"] if m["role"] == "user")
    assert all(bid in prompt for bid in beliefs)


async def test_a_fenced_json_answer_is_accepted() -> None:
    with FakeReflectionLLM(mode="fenced") as fake:
        outcome = await _reflect(fake)
    assert outcome.reasoner == "llm" and len(outcome.insights) == 2


async def test_max_beliefs_bounds_what_is_kept() -> None:
    with FakeReflectionLLM(answers=9) as fake:
        outcome = await _reflect(fake, max_beliefs=3)
    assert len(outcome.insights) == 3


def test_a_single_anecdote_cannot_carry_high_confidence() -> None:
    assert evidence_cap(1) < 0.53
    assert evidence_cap(1) < evidence_cap(20) < evidence_cap(100) < 0.95


async def test_429_with_retry_after_is_retried_then_answered() -> None:
    with FakeReflectionLLM() as fake:
        fake.then("429:0.05")
        outcome = await _reflect(fake)
        calls = len(fake.requests)
    assert outcome.reasoner == "llm" and calls == 2


@pytest.mark.parametrize(
    ("script", "mode", "reason"),
    [
        (["500", "502", "503"], "ok", "HTTP 503"),
        (["429"], "ok", "no Retry-After"),
        (["malformed"], "ok", "malformed JSON"),
        ([], "prose", "not JSON"),
        ([], "unknown", "cites evidence it was not given: belief_invented"),
        ([], "overconfident", "invalid belief at beliefs.0.confidence"),
    ],
)
async def test_every_failure_falls_back_to_local_beliefs_saying_why(
    script: list[str], mode: str, reason: str
) -> None:
    with FakeReflectionLLM(mode=mode) as fake:
        fake.then(*script)
        outcome = await _reflect(fake)
    assert outcome.reasoner == "local" and outcome.insights == []
    assert outcome.fallback_reason is not None and reason in outcome.fallback_reason
    assert "sk-test-secret" not in outcome.fallback_reason


async def test_a_hanging_endpoint_ends_at_the_timeout() -> None:
    with FakeReflectionLLM() as fake:
        fake.then("hang", "hang", "hang")
        outcome = await asyncio.wait_for(_reflect(fake, timeout_s=0.3), timeout=10)
    assert outcome.reasoner == "local"
    assert outcome.fallback_reason is not None and "TimeoutError" in outcome.fallback_reason


async def test_nothing_to_reason_about_makes_no_call() -> None:
    with FakeReflectionLLM() as fake:
        reasoner = _reasoner(fake)
        outcome = await reasoner.reflect([], as_of=AS_OF, correlation_id="c")
        await reasoner.aclose()
        assert fake.requests == []
    assert outcome.reasoner == "local" and outcome.fallback_reason


def test_llm_reasoner_needs_an_endpoint() -> None:
    with pytest.raises(ValueError, match=r"learning\.llm\.base_url is required"):
        LearningConfig(reasoner="llm")
    with pytest.raises(ValueError, match="http:// or https://"):
        LearningConfig.model_validate({"reasoner": "llm", "llm": {"base_url": "file:///etc/passwd"}})


@pytest.mark.realdata
def test_jax_reflect_with_the_llm_adds_insights_and_leaves_weights_alone(
    shared_data: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    db = f"sqlite+aiosqlite:///{tmp_path}/j.db"
    common = ["--data", str(shared_data / "daily_ohlcv_stooq_sp500.csv.gz"), "--db", db]
    base_env = {"JAX_DATA_DIR": str(tmp_path), "COLUMNS": "250"}

    def jax(*args: str, env: dict[str, str] | None = None) -> str:
        out = runner.invoke(app, list(args), env={**base_env, **(env or {})})
        assert out.exit_code == 0, out.output
        return out.stdout

    jax("run", "--as-of", "2015-06-30", "--lookback", "120", "--json", *common, "AAPL", "MSFT", "XOM", "JPM")
    local = json.loads(jax("reflect", "--as-of", "2015-09-30", "--json", *common))
    assert local["reasoner"]["reasoner"] == "local" and local["insights"] == []
    with FakeReflectionLLM(answers=2) as fake:
        llm_env = {
            "JAX_LEARNING__REASONER": "llm",
            "JAX_LEARNING__LLM__BASE_URL": f"{fake.url}/v1",
            "JAX_LEARNING__LLM__API_KEY": "sk-cli-secret",
        }
        summary = json.loads(jax("reflect", "--as-of", "2015-09-30", "--json", *common, env=llm_env))
        table = jax("reflect", "--as-of", "2015-09-30", *common, env=llm_env)
    assert summary["reasoner"]["reasoner"] == "llm" and len(summary["insights"]) == 2
    assert summary["weights"] == local["weights"], "the LLM must not move the weights"
    assert "* Pattern 0" in table and "sk-cli-secret" not in table
    # Retained beside the track records, once however often reflected.
    assert summary["retained"]["strategy_beliefs"] == len(summary["beliefs"]) + 2

    async def bank() -> list[str]:
        memory = await open_memory(Settings(database_url=db))
        try:
            items = await memory.recall({"limit": 1000}, bank="strategy_beliefs")
        finally:
            await memory.close()
        return [str((i.data or {}).get("belief_type")) for i in items]

    types = asyncio.run(bank())
    assert types.count(LLM_BELIEF_TYPE) == 2
