"""A provider chain: vendors in priority order, the next one tried when one is down.

"Down" means VendorUnavailableError (unreachable, throttling past our retries, key refused),
VendorResponseError (garbage) or an open circuit breaker (``marketdata.<vendor>``, shared through the
engine's ResilienceRegistry so a dead vendor is skipped at once instead of timing out for every symbol).
A vendor that says the symbol does not exist is healthy: the chain still asks the others (vendors carry
different universes) and raises UnknownSymbolError only when every vendor that answered said so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from jax_assistant.marketdata.base import MarketDataError, UnknownSymbolError
from jax_assistant.marketdata.providers.base import BarSource, VendorBars, VendorUnavailableError
from jax_assistant.observability.logging import get_logger
from jax_assistant.pipeline.resilience import CallNotPermittedError, ResilienceRegistry

log = get_logger("jax_assistant.marketdata.chain")


def breaker_key(source: str) -> str:
    return f"marketdata.{source}"


class ProviderChain:
    """Fetches from the first vendor that can serve the symbol."""

    name = "chain"

    def __init__(self, sources: Sequence[BarSource], registry: ResilienceRegistry | None = None) -> None:
        if not sources:
            raise ValueError("a provider chain needs at least one vendor")
        self.sources = list(sources)
        self.registry = registry

    async def fetch_daily(
        self, symbol: str, start: date, end: date, *, only: str | None = None
    ) -> VendorBars:
        """Bars from the first healthy vendor (or from ``only``, the vendor a cached series came from)."""
        failures: list[str] = []
        unknown: list[str] = []
        for source in self.sources:
            if only is not None and source.name != only:
                continue
            breaker = self.registry.breaker(breaker_key(source.name)) if self.registry is not None else None
            try:
                permit = breaker.acquire() if breaker is not None else None
            except CallNotPermittedError as exc:
                failures.append(f"{source.name}: {exc}")
                continue
            started = breaker.clock.monotonic() if breaker is not None else 0.0
            try:
                bars = await source.fetch_daily(symbol, start, end)
            except UnknownSymbolError as exc:
                if breaker is not None:
                    breaker.on_success(breaker.clock.monotonic() - started, permit)  # the vendor worked
                unknown.append(f"{source.name}: {exc}")
                continue
            except (VendorUnavailableError, MarketDataError) as exc:
                if breaker is not None:
                    breaker.on_error(breaker.clock.monotonic() - started, exc, permit)
                log.warning(
                    "market-data vendor failed; trying the next",
                    source=source.name,
                    symbol=symbol,
                    error=str(exc),
                )
                failures.append(str(exc))
                continue
            except BaseException:
                if breaker is not None:
                    breaker.release(permit)
                raise
            if breaker is not None:
                breaker.on_success(breaker.clock.monotonic() - started, permit)
            return bars
        if unknown and not failures:
            raise UnknownSymbolError(symbol, "; ".join(unknown))
        raise VendorUnavailableError(
            self.name, f"no vendor could serve {symbol}: " + "; ".join(failures + unknown)
        )

    async def aclose(self) -> None:
        for source in self.sources:
            await source.aclose()
