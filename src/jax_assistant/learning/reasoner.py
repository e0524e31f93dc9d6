"""The optional LLM reasoner of the learning loop, on any OpenAI-compatible ``/chat/completions``.

The deterministic track records (``memory/beliefs.py``) are always computed first and always drive the
strategy weights: a model's answer is not reproducible, so it must never change a decision. What the
LLM adds is *interpretation*: a few ``llm_insight`` beliefs that read across the track records
("breakouts fail on earnings days", "AAPL keeps stopping out"), each citing the track-record beliefs it
rests on. They are retained to ``strategy_beliefs`` beside the numbers, so ``recall_memory`` hands them
to later runs as context, and they are audited with the reflection.

Every answer is checked before anything is kept:

- the completion must be the documented chat-completion shape, its content one JSON object
  ``{"beliefs": [{"belief_type", "summary", "evidence_ids", "confidence"}]}``;
- every ``evidence_ids`` entry must be the id of a belief the model was shown (a model that invents
  evidence is not believed at all: the whole answer is dropped);
- ``confidence`` must lie in [0, 1] and is then capped by the evidence behind it, so "no single
  anecdote becomes a law" holds for the model too (``evidence_cap``).

On any failure (429, 5xx, a hang past the timeout, garbage, an invalid belief) the result falls back to
the local beliefs and says why (``reasoner: "local"``, ``fallbackReason``); the reflection itself never
fails because the model did.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from jax_assistant.memory.beliefs import Belief
from jax_assistant.memory.models import MAX_SUMMARY, MemoryItem, make_belief
from jax_assistant.pipeline.policy import RetryPolicy
from jax_assistant.pipeline.resilience import Clock, SystemClock, call_with_retry
from jax_assistant.research.http import ResearchError, post_json

if TYPE_CHECKING:
    import httpx

LLM_BELIEF_TYPE: Final = "llm_insight"
# Shown to the model at most: the strongest evidence first, so a long history cannot blow the prompt.
MAX_EVIDENCE: Final = 60
# The cap on confidence grows with the number of track-record trades cited: n / (n + prior).
EVIDENCE_PRIOR: Final = 20.0

SYSTEM_PROMPT = (
    "You review a trading assistant's track record. You are given beliefs computed from settled trades "
    "(strategy, strategy x event type and symbol track records: trades, win rate, expectancy in R). "
    "Find at most {max_beliefs} patterns that matter for choosing strategies. Use only the evidence "
    "given; cite the ids of the beliefs each pattern rests on. Reply with one JSON object: "
    '{{"beliefs": [{{"belief_type": "llm_insight", "summary": "<one sentence>", '
    '"evidence_ids": ["<belief id>", ...], "confidence": <0..1>}}]}}.'
)


def _retry() -> RetryPolicy:
    return RetryPolicy(
        attempts=3, initial_backoff_s=0.5, max_backoff_s=10.0, retry_on=["TransientError", "TimeoutError"]
    )


class LLMReasonerConfig(BaseModel):
    """``[learning.llm]``: the endpoint of the optional LLM reasoner (``learning.reasoner = "llm"``)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    )
    model: str = Field(default="gpt-4o-mini", min_length=1)
    api_key: SecretStr | None = Field(default=None, description="sent as a Bearer token, never logged")
    timeout_s: float = Field(default=60.0, gt=0, allow_inf_nan=False, description="per call")
    max_tokens: int = Field(default=800, ge=1, le=100_000)
    max_beliefs: int = Field(default=5, ge=1, le=20, description="llm_insight beliefs kept per reflection")
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    retry: RetryPolicy = Field(default_factory=_retry)

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class _Proposed(BaseModel):
    """One belief as the model states it, before it is checked against the evidence."""

    model_config = ConfigDict(extra="ignore")

    belief_type: Literal["llm_insight"] = LLM_BELIEF_TYPE
    summary: str = Field(min_length=1, max_length=MAX_SUMMARY)
    evidence_ids: list[str] = Field(min_length=1, max_length=MAX_EVIDENCE)
    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    beliefs: list[_Proposed] = Field(max_length=100)


class ReasonerOutcome(BaseModel):
    """What the reasoner did: the ``llm_insight`` items it adds (empty on fallback) and why."""

    model_config = ConfigDict(frozen=True)

    reasoner: Literal["local", "llm"]
    fallback_reason: str | None = None
    insights: list[MemoryItem] = Field(default_factory=list)

    def status(self) -> dict[str, Any]:
        return {
            "reasoner": self.reasoner,
            "fallbackReason": self.fallback_reason,
            "insights": len(self.insights),
        }


def evidence_cap(trades: int) -> float:
    """The most confidence ``trades`` settled trades can carry: 0.5 + 0.45 * n / (n + 20).

    One trade caps at about 0.52, 20 at 0.725, 100 at 0.875: weak evidence moves little."""
    return round(0.5 + 0.45 * trades / (trades + EVIDENCE_PRIOR), 4)


def build_prompt(beliefs: Sequence[Belief], as_of: date) -> str:
    lines = [f"As of: {as_of.isoformat()}", "Beliefs (id | type | summary | confidence):"]
    lines += [f"{b.id} | {b.belief_type} | {b.summary} | {b.confidence:.3f}" for b in beliefs]
    return "\n".join(lines)


def _shown(beliefs: Sequence[Belief]) -> list[Belief]:
    # Most trades first, then id: deterministic, and the strongest evidence survives the cut.
    return sorted(beliefs, key=lambda b: (-b.record.sample_size, b.id))[:MAX_EVIDENCE]


class LLMReasoner:
    name = "llm"

    def __init__(
        self,
        config: LLMReasonerConfig,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not config.base_url:
            raise ValueError("learning.llm.base_url: required when learning.reasoner = 'llm'")
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._client = client
        self._own_client = client is None
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random(0)

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def reflect(
        self, beliefs: Sequence[Belief], *, as_of: date, correlation_id: str
    ) -> ReasonerOutcome:
        """``llm_insight`` items read from ``beliefs``, or a fallback saying why there are none."""
        shown = _shown(beliefs)
        if not shown:
            return ReasonerOutcome(reasoner="local", fallback_reason="no settled trades to reason about")
        try:
            answer, _ = await call_with_retry(
                lambda: self._ask(shown, as_of, correlation_id),
                self.config.retry,
                clock=self.clock,
                rng=self.rng,
            )
            insights = self._check(answer, shown, as_of)
        except Exception as exc:  # the reflection must not fail because the model did
            return ReasonerOutcome(reasoner="local", fallback_reason=f"{type(exc).__name__}: {exc}"[:300])
        return ReasonerOutcome(reasoner="llm", insights=insights)

    async def _ask(self, shown: Sequence[Belief], as_of: date, correlation_id: str) -> _Answer:
        import httpx  # only when used: a run that talks to no service never loads it

        c = self.config
        if self._client is None:
            self._client = httpx.AsyncClient()
        body = {
            "model": c.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT.format(max_beliefs=c.max_beliefs)},
                {"role": "user", "content": build_prompt(shown, as_of)},
            ],
            "max_tokens": c.max_tokens,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }
        headers = {"Authorization": f"Bearer {c.api_key.get_secret_value()}"} if c.api_key else {}
        _, out = await post_json(
            self._client,
            self.url,
            body,
            correlation_id=correlation_id,
            timeout_s=c.timeout_s,
            max_bytes=c.max_body_bytes,
            service="reflection llm",
            headers=headers,
        )
        return _parse(out)

    def _check(self, answer: _Answer, shown: Sequence[Belief], as_of: date) -> list[MemoryItem]:
        by_id = {b.id: b for b in shown}
        items: list[MemoryItem] = []
        for index, proposed in enumerate(answer.beliefs[: self.config.max_beliefs]):
            unknown = sorted(set(proposed.evidence_ids) - by_id.keys())
            if unknown:
                raise ResearchError(
                    f"belief {index} cites evidence it was not given: {', '.join(unknown[:5])}"
                )
            cited = [by_id[i] for i in dict.fromkeys(proposed.evidence_ids)]
            # The evidence of a track-record belief is its trades; the widest window among the cited.
            trades = max(b.record.sample_size for b in cited)
            cap = evidence_cap(trades)
            start = min(b.time_window[0] for b in cited)
            items.append(
                make_belief(
                    belief_type=LLM_BELIEF_TYPE,
                    summary=proposed.summary,
                    window=(_midnight(start), _midnight(as_of)),
                    evidence_ids=[b.id for b in cited],
                    confidence=min(proposed.confidence, cap),
                    ts=_midnight(as_of),
                    tags=["reasoner:llm"],
                    reasoner="llm",
                    model=self.config.model,
                    stated_confidence=proposed.confidence,
                    confidence_cap=cap,
                    trades=trades,
                ).model_copy(update={"document_id": f"belief:llm_insight:{as_of.isoformat()}:{index}"})
            )
        return items


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _parse(out: Any) -> _Answer:
    try:
        content = out["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ResearchError(f"not a chat completion ({type(exc).__name__}: {exc})") from exc
    if not isinstance(content, str) or not content.strip():
        raise ResearchError("the completion has no content")
    text = content.strip()
    if text.startswith("```"):  # models wrap JSON in a fence even when asked not to
        text = text.strip("`").removeprefix("json").strip()
    try:
        return _Answer.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ResearchError(f"the completion is not JSON ({exc})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ResearchError(f"invalid belief at {where}: {first['msg']}") from exc
