"""The built-in research provider (the default): facts the system already knows, no LLM.

It answers no open question (it cannot know "key risks"); it states what the data says - recent
events, trend and volatility, volume profile, earnings proximity - and what this symbol and strategy
did before, from memory or storage. Every number goes into ``metrics``; the summary is one readable
paragraph. The same facts are what the LLM provider is prompted with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

import numpy as np

from jax_assistant.domain import Event, ResearchBundle
from jax_assistant.marketdata.base import BarSeries, EarningsReport, MarketDataProvider
from jax_assistant.research.base import OutcomeHistory, PastOutcomes, ProviderAnswer, ResearchRequest
from jax_assistant.research.http import ResearchError

TRADING_DAYS = 252


def market_metrics(series: BarSeries) -> dict[str, float]:
    """Trend, volatility and volume figures of ``series`` at its last bar (windows that do not fit
    the history are left out rather than guessed)."""
    close, volume = series.close, series.volume
    n = len(series)
    m: dict[str, float] = {}
    if n == 0:
        return m
    m["last_close"] = float(close[-1])
    m["last_volume"] = float(volume[-1])
    for k in (5, 20):
        if n > k:
            m[f"change_{k}d_pct"] = float((close[-1] / close[-1 - k] - 1.0) * 100.0)
    for k in (20, 50):
        if n >= k:
            m[f"sma_{k}"] = float(np.mean(close[-k:]))
    if "sma_50" in m:
        m["price_vs_sma50_pct"] = (m["last_close"] / m["sma_50"] - 1.0) * 100.0
    if n >= 21:
        returns = close[-20:] / close[-21:-1] - 1.0  # the last 20 daily returns
        vol = float(np.std(returns, ddof=1)) * 100.0
        m["volatility_20d_pct"] = vol
        m["volatility_annualised_pct"] = vol * math.sqrt(TRADING_DAYS)
        prior = float(np.mean(volume[-21:-1]))  # the 20 sessions before the last one
        m["avg_volume_20d"] = prior
        if prior > 0:
            m["volume_ratio_20d"] = float(volume[-1]) / prior
        m["high_20d"] = float(np.max(series.high[-20:]))
        m["low_20d"] = float(np.min(series.low[-20:]))
    return m


def earnings_metrics(reports: Sequence[EarningsReport], as_of: date) -> dict[str, float]:
    """Calendar days since the last report on or before ``as_of``, with its EPS surprise when the source
    has estimates. The next report date is left out: the earnings file holds reports that happened, and
    a replay reading the next one would know what the trader could not (tests/e2e prefix invariance)."""
    past = [r for r in reports if r.date <= as_of]
    m: dict[str, float] = {}
    if past:
        last = max(past, key=lambda r: r.date)
        m["days_since_earnings"] = float((as_of - last.date).days)
        if last.eps is not None:
            m["last_eps"] = last.eps
        if last.eps_estimate is not None:
            m["last_eps_estimate"] = last.eps_estimate
        if last.eps is not None and last.eps_estimate not in (None, 0.0):
            assert last.eps_estimate is not None
            m["eps_surprise_pct"] = (last.eps - last.eps_estimate) / abs(last.eps_estimate) * 100.0
    return m


def trend_label(m: dict[str, float]) -> str:
    sma20, sma50, last = m.get("sma_20"), m.get("sma_50"), m.get("last_close")
    if sma20 is None or sma50 is None or last is None:
        return "unknown"
    if last > sma50 and sma20 > sma50:
        return "up"
    if last < sma50 and sma20 < sma50:
        return "down"
    return "sideways"


def _history_metrics(prefix: str, past: PastOutcomes) -> dict[str, float]:
    m = {f"{prefix}_past_setups": float(past.setups), f"{prefix}_past_allowed": float(past.allowed)}
    if past.wins or past.losses:
        m[f"{prefix}_past_wins"] = float(past.wins)
        m[f"{prefix}_past_losses"] = float(past.losses)
    return m


def _event_line(event: Event) -> str:
    shown = ", ".join(
        f"{k} {v:+.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in list(event.payload.items())[:3]
    )
    return f"{event.type} on {event.session.isoformat()}" + (f" ({shown})" if shown else "")


class BuiltinProvider:
    name = "builtin"
    paid = False
    remote = False
    max_batch = 1

    def __init__(self, market: MarketDataProvider, history: OutcomeHistory | None = None) -> None:
        self.market = market
        self.history = history

    async def research(self, request: ResearchRequest) -> ProviderAnswer:
        return ProviderAnswer(bundle=await self.facts(request))

    async def research_batch(self, requests: Sequence[ResearchRequest]) -> dict[str, ProviderAnswer]:
        return {r.symbol: await self.research(r) for r in requests}

    async def aclose(self) -> None:
        return None

    async def facts(self, request: ResearchRequest) -> ResearchBundle:
        symbol, as_of = request.symbol, request.as_of
        series = self.market.bars(symbol, as_of)
        if len(series) == 0:
            raise ResearchError(f"builtin: no bars for {symbol} on or before {as_of.isoformat()}")
        metrics = market_metrics(series)
        metrics.update(earnings_metrics(self.market.earnings_reports(symbol), as_of))
        metrics["events_in_run"] = float(len(request.events))
        points = [_event_line(e) for e in sorted(request.events, key=lambda e: (e.time, e.id))]
        if self.history is not None:
            own = await self.history.for_symbol(symbol, before=as_of, exclude_run=request.run_id)
            metrics.update(_history_metrics("symbol", own))
            points.append(_history_line(f"{symbol}", own))
            for sid in request.strategy_ids:
                past = await self.history.for_strategy(sid, before=as_of, exclude_run=request.run_id)
                metrics.update(_history_metrics(f"strategy_{sid}", past))
                points.append(_history_line(f"strategy {sid}", past))
        summary = _summary(symbol, as_of, metrics)
        markdown = _markdown(symbol, as_of, summary, points, metrics, request.questions)
        return ResearchBundle(
            ticker=symbol, summary=summary, key_points=points, metrics=metrics, raw_markdown=markdown
        )


def _history_line(who: str, past: PastOutcomes) -> str:
    if not past.setups:
        return f"no earlier setups recorded for {who}"
    line = f"{who}: {past.setups} earlier setup(s), {past.allowed} allowed"
    if past.last_session is not None:
        line += f", the last on {past.last_session.isoformat()}"
    if past.wins or past.losses:
        line += f"; {past.wins} won / {past.losses} lost"
    return line + f" ({past.source})"


def _summary(symbol: str, as_of: date, m: dict[str, float]) -> str:
    parts = [f"{symbol} closed at {m['last_close']:.2f} on {as_of.isoformat()}"]
    trend = trend_label(m)
    if trend != "unknown":
        detail = f"{trend} trend"
        if "change_20d_pct" in m:
            detail += f", {m['change_20d_pct']:+.1f}% over 20 sessions"
        if "price_vs_sma50_pct" in m:
            detail += f", {m['price_vs_sma50_pct']:+.1f}% against its 50-day average"
        parts.append(detail)
    if "volatility_20d_pct" in m:
        parts.append(f"20-day volatility {m['volatility_20d_pct']:.2f}% a day")
    if "volume_ratio_20d" in m:
        parts.append(f"volume {m['volume_ratio_20d']:.1f}x its 20-day average")
    if "days_since_earnings" in m:
        parts.append(f"last earnings {m['days_since_earnings']:.0f} days ago")
    return "; ".join(parts) + "."


def _markdown(
    symbol: str,
    as_of: date,
    summary: str,
    points: Sequence[str],
    metrics: dict[str, float],
    questions: Sequence[str],
) -> str:
    lines = [f"## {symbol} - built-in research ({as_of.isoformat()})", "", summary, ""]
    lines += [f"- {p}" for p in points]
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
    if questions:
        # Said plainly: these need a research provider (dexter or llm); the facts above do not answer them.
        lines += ["", "Open questions (not answered by built-in research):"]
        lines += [f"- {q}" for q in questions]
    return "\n".join(lines)
