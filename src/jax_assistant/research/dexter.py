"""The Dexter provider: ``POST {DEXTER_SERVICE_URL}/tools`` with ``{"tool", "input"}``.

- ``dexter.research_company {ticker, questions[]}`` -> ``{ticker, summary, key_points[], metrics{},
  raw_markdown}`` for one symbol;
- ``dexter.compare_companies {tickers[], focus}`` -> ``{comparison_axis, items[{ticker, thesis,
  notes[]}]}`` answers several symbols in one call (the batch path).

A ``{"error": ...}`` body (whatever its status) and a response of the wrong shape are errors, never a
silently empty bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jax_assistant.domain import ResearchBundle
from jax_assistant.research.base import ProviderAnswer, ResearchRequest
from jax_assistant.research.config import DexterConfig
from jax_assistant.research.http import ResearchError, post_json

if TYPE_CHECKING:
    import httpx


class _CompareItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ticker: str
    thesis: str = ""
    notes: list[str] = Field(default_factory=list)


class _CompareOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    comparison_axis: str = ""
    items: list[_CompareItem]


class _CompanyOutput(BaseModel):
    # Dexter may add fields; the bundle keeps the contract's five.
    model_config = ConfigDict(extra="ignore")

    ticker: str
    summary: str = ""
    key_points: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    raw_markdown: str = ""


class DexterProvider:
    name = "dexter"
    paid = False
    remote = True

    def __init__(self, config: DexterConfig, url: str, *, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.url = url.rstrip("/") + "/tools"
        self.max_batch = config.batch_size
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

    async def _tool(self, tool: str, payload: dict[str, Any], correlation_id: str) -> Any:
        _, body = await post_json(
            self.client,
            self.url,
            {"tool": tool, "input": payload},
            correlation_id=correlation_id,
            timeout_s=self.config.timeout_s,
            max_bytes=self.config.max_body_bytes,
            service="dexter",
        )
        if not isinstance(body, dict):
            raise ResearchError(f"dexter {tool}: expected a JSON object, got {type(body).__name__}")
        if body.get("error"):
            raise ResearchError(f"dexter {tool}: {str(body['error'])[:300]}")
        if "output" not in body:
            raise ResearchError(f"dexter {tool}: response has neither 'output' nor 'error'")
        return body["output"]

    async def research(self, request: ResearchRequest) -> ProviderAnswer:
        out = await self._tool(
            "dexter.research_company",
            {"ticker": request.symbol, "questions": request.questions},
            request.correlation_id,
        )
        try:
            parsed = _CompanyOutput.model_validate(out)
        except ValidationError as exc:
            raise ResearchError(f"dexter.research_company: unexpected output ({_first(exc)})") from exc
        if parsed.ticker.upper() != request.symbol.upper():
            raise ResearchError(
                f"dexter.research_company: asked about {request.symbol}, answered about {parsed.ticker}"
            )
        bundle = ResearchBundle(**{**parsed.model_dump(), "ticker": request.symbol})
        return ProviderAnswer(bundle=bundle, calls=["dexter.research_company"])

    async def research_batch(self, requests: Sequence[ResearchRequest]) -> dict[str, ProviderAnswer]:
        """Several symbols with the same questions in one ``dexter.compare_companies`` call; a symbol
        missing from the answer is missing from the result (the caller falls back for it)."""
        if len(requests) == 1:
            return {requests[0].symbol: await self.research(requests[0])}
        first = requests[0]
        out = await self._tool(
            "dexter.compare_companies",
            {"tickers": [r.symbol for r in requests], "focus": "; ".join(first.questions)},
            first.correlation_id,
        )
        try:
            parsed = _CompareOutput.model_validate(out)
        except ValidationError as exc:
            raise ResearchError(f"dexter.compare_companies: unexpected output ({_first(exc)})") from exc
        wanted = {r.symbol.upper(): r.symbol for r in requests}
        answers: dict[str, ProviderAnswer] = {}
        for item in parsed.items:
            symbol = wanted.get(item.ticker.upper())
            if symbol is None:
                continue
            lines = [f"## {symbol} ({parsed.comparison_axis or 'comparison'})", "", item.thesis, ""]
            lines += [f"- {n}" for n in item.notes]
            bundle = ResearchBundle(
                ticker=symbol, summary=item.thesis, key_points=item.notes, raw_markdown="\n".join(lines)
            )
            answers[symbol] = ProviderAnswer(bundle=bundle, calls=["dexter.compare_companies"])
        return answers


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(map(str, err['loc'])) or 'output'}: {err['msg']}"
