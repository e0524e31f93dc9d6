"""Past outcomes from memory (the ``trade_outcomes`` bank), merged with the decision counts in storage.

The memory facade is used through its ``recall(query, bank=...)`` method only (duck-typed, so this
module does not import the memory package). Setups and allowed counts stay the trades table's exact
figures; wins and losses come from outcome items, read strictly before the run's session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Protocol

from jax_assistant.domain import session_time
from jax_assistant.observability.logging import get_logger
from jax_assistant.research.base import OutcomeHistory, PastOutcomes

log = get_logger("jax_assistant.research.memory")

OUTCOMES_BANK = "trade_outcomes"
_WIN = {"win", "won", "profit", "target", "target_hit"}
_LOSS = {"loss", "lost", "stopped", "stop", "stop_hit"}


class MemoryRecall(Protocol):
    async def recall(
        self, query: Mapping[str, Any] | None = None, *, bank: str | None = None
    ) -> Sequence[Any]: ...


def outcome_of(data: Mapping[str, Any]) -> str | None:
    """``win`` / ``loss`` from an outcome item's data (a label, else the sign of its R or P&L)."""
    label = data.get("outcome", data.get("result"))
    if isinstance(label, str):
        text = label.strip().lower()
        if text in _WIN:
            return "win"
        if text in _LOSS:
            return "loss"
    for key in ("rMultiple", "r_multiple", "r", "pnl"):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value != 0:
            return "win" if value > 0 else "loss"
    return None


class MemoryHistory:
    def __init__(
        self, memory: MemoryRecall, storage: OutcomeHistory | None = None, *, limit: int = 500
    ) -> None:
        self.memory = memory
        self.storage = storage
        self.limit = limit

    async def for_symbol(self, symbol: str, *, before: date, exclude_run: str | None = None) -> PastOutcomes:
        base = (
            await self.storage.for_symbol(symbol, before=before, exclude_run=exclude_run)
            if self.storage
            else PastOutcomes()
        )
        items = await self._recall({"symbol": symbol, "limit": self.limit})
        return self._merge(base, items, before, lambda _data: True)

    async def for_strategy(
        self, strategy_id: str, *, before: date, exclude_run: str | None = None
    ) -> PastOutcomes:
        # Memory's outcomes are written by reflection, never by a run in progress: nothing to exclude.
        base = (
            await self.storage.for_strategy(strategy_id, before=before, exclude_run=exclude_run)
            if self.storage
            else PastOutcomes()
        )
        items = await self._recall({"q": strategy_id, "limit": self.limit})

        def mine(data: Mapping[str, Any]) -> bool:
            return bool(data.get("strategyId", data.get("strategy_id")) == strategy_id)

        return self._merge(base, items, before, mine)

    async def _recall(self, query: dict[str, Any]) -> Sequence[Any]:
        try:
            return await self.memory.recall(query, bank=OUTCOMES_BANK)
        except Exception:  # memory down: research goes on with what storage knows
            log.warning("memory recall failed; past outcomes from storage only", exc_info=True)
            return []

    def _merge(self, base: PastOutcomes, items: Sequence[Any], before: date, keep: Any) -> PastOutcomes:
        cutoff = session_time(before)
        wins = losses = 0
        for item in items:
            ts, data = getattr(item, "ts", None), getattr(item, "data", None) or {}
            if ts is None or ts >= cutoff or not keep(data):
                continue  # never look ahead
            outcome = outcome_of(data)
            wins += outcome == "win"
            losses += outcome == "loss"
        return base.model_copy(
            update={
                "wins": wins,
                "losses": losses,
                "source": "memory" if self.storage is None else "memory+storage",
            }
        )
