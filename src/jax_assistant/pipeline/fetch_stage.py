"""The ``fetch_market_data`` stage: fetch a symbol's bars from the live vendors before detection.

It runs only in pipelines of a live provider (the orchestrator puts it first; the csv and sample
pipelines never see it). Like any stage its timeout, retries and breaker are engine policy
(``[stages.fetch_market_data]``). Inside, the vendor layer already retries 429/5xx per request and the
chain falls back across vendors; the stage's own retry covers the case where every vendor was down at
once. An unknown symbol (DataError) is not retried: the symbol fails with the vendors' answer.
"""

from __future__ import annotations

from typing import ClassVar

from jax_assistant.marketdata.settings import LIVE_PROVIDERS
from jax_assistant.pipeline.base import BaseStage, StageContext, StageOutput, StageSkipped, WorkItem
from jax_assistant.pipeline.policy import RetryPolicy, StagePolicy

FETCH_STAGE = "fetch_market_data"


def with_fetch_stage(pipeline: list[str], provider: str) -> list[str]:
    """``pipeline`` with the fetch stage first when ``provider`` is a live vendor (unchanged otherwise)."""
    if provider not in LIVE_PROVIDERS or FETCH_STAGE in pipeline:
        return pipeline
    return [FETCH_STAGE, *pipeline]


class FetchMarketDataStage(BaseStage):
    name = FETCH_STAGE
    leaves_input_intact = True  # built-in: returns changes through model_copy
    # Generous timeout: a vendor's rate limit is waited out inside the stage (Polygon's free plan
    # allows 5 requests a minute). Detection waits for this stage through `after`.
    default_policy: ClassVar[StagePolicy] = StagePolicy(
        timeout_s=300.0,
        breaker="marketdata",
        retry=RetryPolicy(attempts=2, initial_backoff_s=5.0, retry_on=["VendorUnavailableError"]),
    )

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        from jax_assistant.marketdata.providers.live import LiveProvider  # httpx loads only for live runs

        provider = ctx.services.provider
        if not isinstance(provider, LiveProvider):
            raise StageSkipped(f"the {provider.name} provider needs no fetching")
        report = await provider.load(item.symbol, item.as_of)
        summary = {
            "source": report.source,
            "reason": report.reason,  # cold | tail | fresh | readjusted | adjustment_changed | fallback
            "bars": len(report.candles),
            "requested": [d.isoformat() for d in report.requested] if report.requested else None,
        }
        return StageOutput(item=item.model_copy(update={"extras": {**item.extras, self.name: summary}}))
