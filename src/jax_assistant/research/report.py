"""Research in the operator's views: the run summary line and the ``/status`` section."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from jax_assistant.domain import TradeRecord, utc_now
from jax_assistant.research.config import ResearchConfig
from jax_assistant.research.store import ResearchStore
from jax_assistant.storage.db import Database


def research_line(allowed: Sequence[TradeRecord]) -> str | None:
    """``research: 7 setup(s): dexter 5 (2 cached), builtin 2 | unavailable 0 | 1,234 tokens, cost 0.0123``
    (from each setup's provenance, so a stored run reports the same as a fresh one)."""
    provs = [t.setup.research_provenance for t in allowed if t.setup.research_provenance is not None]
    if not provs:
        return None
    by_provider: Counter[str] = Counter(p.provider for p in provs if p.status == "ok" and p.provider)
    cached: Counter[str] = Counter(p.provider for p in provs if p.source == "cached" and p.provider)
    parts = [
        f"{name} {n}" + (f" ({cached[name]} cached)" if cached[name] else "")
        for name, n in by_provider.most_common()
    ]
    unavailable = sum(1 for p in provs if p.status == "unavailable")
    tokens = sum(p.tokens for p in provs)
    cost = sum(p.cost for p in provs)
    line = (
        f"research: {len(provs)} setup(s): {', '.join(parts) or 'none answered'} | unavailable {unavailable}"
    )
    line += f" | {tokens:,} tokens, cost {cost:.4f}"
    reasons = Counter(p.reason for p in provs if p.status == "unavailable" and p.reason)
    if reasons:
        reason, _ = reasons.most_common(1)[0]
        line += f" | {reason[:160]}"
    return line


async def research_status(config: ResearchConfig, db: Database | None) -> dict[str, Any]:
    """Providers, today's paid spend (from the ledger) and the budgets it counts against."""
    budget = config.llm.budget
    status: dict[str, Any] = {
        "providers": list(config.providers),
        "cacheTtlS": config.cache_ttl_s,
        "budget": {
            "runTokens": budget.run_tokens,
            "runCost": budget.run_cost,
            "dayTokens": budget.day_tokens,
            "dayCost": budget.day_cost,
        },
    }
    if db is not None:
        today = utc_now().date()
        try:
            spend = await ResearchStore(db).spend(day=today)
        except Exception as exc:  # /status must answer even when the database is struggling
            status["spendToday"] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        else:
            status["spendToday"] = {"day": today.isoformat(), **spend.as_dict()}
    return status
