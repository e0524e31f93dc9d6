"""The LLM provider: any OpenAI-compatible ``POST {base_url}/chat/completions``.

It is prompted with the built-in facts plus the questions and asked for JSON
(``{"summary", "key_points"}``); the bundle's metrics stay the built-in numbers, so no figure in it is
made up by the model. Tokens come from the response's ``usage``; cost from the configured prices.
The API key is a ``SecretStr``: it is only unwrapped into the Authorization header.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jax_assistant.domain import ResearchBundle
from jax_assistant.research.base import ProviderAnswer, ResearchRequest
from jax_assistant.research.config import LLMConfig
from jax_assistant.research.http import ResearchError, post_json

if TYPE_CHECKING:
    import httpx

SYSTEM_PROMPT = (
    "You are an equity research assistant. Answer only from the facts given and general knowledge; "
    "say when something is unknown. Reply with one JSON object: "
    '{"summary": "<3 sentences at most>", "key_points": ["<one answer per question>", ...]}.'
)


def build_prompt(request: ResearchRequest) -> str:
    facts = request.facts
    lines = [f"Ticker: {request.symbol}", f"As of: {request.as_of.isoformat()}"]
    if facts is not None:
        lines += ["Facts:", facts.summary, *[f"- {p}" for p in facts.key_points]]
        lines += [f"- {k}: {v:.6g}" for k, v in facts.metrics.items()]
    lines += ["Questions:", *[f"{i}. {q}" for i, q in enumerate(request.questions, 1)]]
    return "\n".join(lines)


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate (~3 characters a token) so the budget check errs on the safe side."""
    return len(text) // 3 + 16


class LLMProvider:
    name = "llm"
    paid = True
    remote = True
    max_batch = 1

    def __init__(self, config: LLMConfig, *, client: httpx.AsyncClient | None = None) -> None:
        if not config.base_url:
            raise ResearchError("llm: no base URL configured (research.llm.base_url)")
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        # Created on first use: a provider built but never called (a validation pass) holds no connection.
        self._client = client

    @property
    def client(self) -> httpx.AsyncClient:
        import httpx  # only when used: a run that talks to no service never loads it

        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float:
        c = self.config
        return (
            prompt_tokens / 1000 * c.price_per_1k_prompt
            + completion_tokens / 1000 * c.price_per_1k_completion
        )

    def estimate(self, request: ResearchRequest, max_tokens: int) -> tuple[int, float]:
        """The most a call for ``request`` may spend: (tokens, cost)."""
        prompt = estimate_tokens(SYSTEM_PROMPT + build_prompt(request))
        return prompt + max_tokens, self.cost_of(prompt, max_tokens)

    async def research(self, request: ResearchRequest, *, max_tokens: int | None = None) -> ProviderAnswer:
        c = self.config
        body = {
            "model": c.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": build_prompt(request)},
            ],
            "max_tokens": max_tokens or c.max_tokens,
            "temperature": 0,
        }
        headers = {"Authorization": f"Bearer {c.api_key.get_secret_value()}"} if c.api_key else {}
        _, out = await post_json(
            self.client,
            self.url,
            body,
            correlation_id=request.correlation_id,
            timeout_s=c.timeout_s,
            max_bytes=c.max_body_bytes,
            service="llm",
            headers=headers,
        )
        content, prompt_tokens, completion_tokens = _parse_completion(out)
        summary, points = _parse_content(content)
        facts = request.facts
        bundle = ResearchBundle(
            ticker=request.symbol,
            summary=summary,
            key_points=points,
            metrics=dict(facts.metrics) if facts else {},
            raw_markdown=content,
        )
        return ProviderAnswer(
            bundle=bundle,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=self.cost_of(prompt_tokens, completion_tokens),
            calls=["chat.completions"],
        )

    async def research_batch(self, requests: Sequence[ResearchRequest]) -> dict[str, ProviderAnswer]:
        return {r.symbol: await self.research(r) for r in requests}


def _parse_completion(out: Any) -> tuple[str, int, int]:
    try:
        content = out["choices"][0]["message"]["content"]
        usage = out.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        completion_tokens = int(usage.get("completion_tokens", 0))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ResearchError(f"llm: not a chat completion ({type(exc).__name__}: {exc})") from exc
    if not isinstance(content, str) or not content.strip():
        raise ResearchError("llm: the completion has no content")
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ResearchError("llm: negative token counts in usage")
    return content, prompt_tokens, completion_tokens


def _parse_content(content: str) -> tuple[str, list[str]]:
    """The model's JSON answer; plain prose is kept as the summary rather than thrown away."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return content.strip()[:2000], []
    if not isinstance(parsed, dict):
        return content.strip()[:2000], []
    summary = str(parsed.get("summary") or "").strip()
    raw_points = parsed.get("key_points") or []
    points = [str(p) for p in raw_points] if isinstance(raw_points, list) else [str(raw_points)]
    return summary, points
