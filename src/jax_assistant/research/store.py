"""Research persistence on the project database: the answer cache, the spend ledger, and past
decisions read back from the trades table (the history used when no memory service is wired in)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, delete, func, insert, or_, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from jax_assistant.domain import ResearchBundle, utc_now
from jax_assistant.research.base import PastOutcomes
from jax_assistant.storage.db import Database
from jax_assistant.storage.tables import ResearchCacheRow, ResearchSpendRow, TradeRow

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PgInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert


def question_key(questions: Sequence[str]) -> str:
    """The cache key of a question set (order kept: it is the order the provider is asked in)."""
    return hashlib.sha256("\n".join(questions).encode()).hexdigest()[:32]


@dataclass
class CachedAnswer:
    bundle: ResearchBundle
    tokens: int
    cost: float
    created_at: datetime


@dataclass
class Spend:
    calls: int = 0
    tokens: int = 0
    cost: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "tokens": self.tokens, "cost": round(self.cost, 6)}


class ResearchStore:
    def __init__(self, db: Database, *, now: Callable[[], datetime] = utc_now) -> None:
        self.db = db
        self.now = now

    # ------------------------------------------------------------------ cache

    async def get(
        self, symbol: str, questions: Sequence[str], provider: str, *, event_key: str | None
    ) -> CachedAnswer | None:
        """A live cached answer, or None. An answer fetched before the symbol's newest event is stale:
        every cached answer of that symbol is dropped (the news changes all of them)."""
        qk = question_key(questions)
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(ResearchCacheRow.__table__).where(ResearchCacheRow.symbol == symbol)
                )
            ).all()
        if event_key is not None and any(r.event_key != event_key for r in rows):
            await self.invalidate(symbol)
            return None
        row = next((r for r in rows if r.question_key == qk and r.provider == provider), None)
        if row is None:
            return None
        expires = row.expires_at
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=self.now().tzinfo)
        if expires <= self.now():
            return None
        return CachedAnswer(
            bundle=ResearchBundle.model_validate(row.bundle),
            tokens=row.tokens,
            cost=row.cost,
            created_at=row.created_at,
        )

    async def put(
        self,
        symbol: str,
        questions: Sequence[str],
        provider: str,
        bundle: ResearchBundle,
        *,
        event_key: str | None,
        ttl_s: float,
        tokens: int = 0,
        cost: float = 0.0,
    ) -> None:
        now = self.now()
        values = {
            "symbol": symbol,
            "question_key": question_key(questions),
            "provider": provider,
            "questions": list(questions),
            "event_key": event_key,
            "bundle": bundle.model_dump(mode="json"),
            "tokens": tokens,
            "cost": cost,
            "created_at": now,
            "expires_at": now + timedelta(seconds=ttl_s),
        }
        stmt: PgInsert | SqliteInsert
        if self.db.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert  # not loaded by a SQLite run

            stmt = pg_insert(ResearchCacheRow).values(**values)
        else:
            stmt = sqlite_insert(ResearchCacheRow).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["symbol", "question_key", "provider"],
            set_={k: stmt.excluded[k] for k in values if k not in ("symbol", "question_key", "provider")},
        )
        async with self.db.transaction() as conn:
            await conn.execute(stmt)

    async def invalidate(self, symbol: str) -> int:
        async with self.db.transaction() as conn:
            result = await conn.execute(delete(ResearchCacheRow).where(ResearchCacheRow.symbol == symbol))
        return int(result.rowcount or 0)

    # ------------------------------------------------------------------ spend ledger

    async def record_spend(
        self,
        *,
        run_id: str | None,
        symbol: str,
        provider: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost: float,
    ) -> None:
        now = self.now()
        async with self.db.transaction() as conn:
            await conn.execute(
                insert(ResearchSpendRow).values(
                    run_id=run_id,
                    symbol=symbol,
                    provider=provider,
                    day=now.date(),
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost=cost,
                    created_at=now,
                )
            )

    async def spend(self, *, day: date | None = None, run_id: str | None = None) -> Spend:
        """Total spend of one UTC day and/or one run."""
        stmt = select(
            func.count(ResearchSpendRow.id),
            func.coalesce(func.sum(ResearchSpendRow.prompt_tokens + ResearchSpendRow.completion_tokens), 0),
            func.coalesce(func.sum(ResearchSpendRow.cost), 0.0),
        )
        if day is not None:
            stmt = stmt.where(ResearchSpendRow.day == day)
        if run_id is not None:
            stmt = stmt.where(ResearchSpendRow.run_id == run_id)
        async with self.db.engine.connect() as conn:
            calls, tokens, cost = (await conn.execute(stmt)).one()
        return Spend(calls=int(calls), tokens=int(tokens), cost=float(cost))


class StorageHistory:
    """Past decisions from the trades table: how many setups this symbol or strategy had before the
    run's date and how many risk allowed. (Outcomes are not stored there; memory has them.)

    One aggregate query each; the session is read from the stored setup's ``time`` (ISO text, so a
    string comparison with the date orders it), never the wall-clock ``created_at``.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def for_symbol(self, symbol: str, *, before: date, exclude_run: str | None = None) -> PastOutcomes:
        return await self._count(TradeRow.symbol == symbol, before, exclude_run)

    async def for_strategy(
        self, strategy_id: str, *, before: date, exclude_run: str | None = None
    ) -> PastOutcomes:
        return await self._count(TradeRow.strategy_id == strategy_id, before, exclude_run)

    async def _count(self, where: Any, before: date, exclude_run: str | None) -> PastOutcomes:
        session = TradeRow.setup["time"].as_string()
        conds = [where, session < before.isoformat()]
        if exclude_run is not None:
            # A setup belongs to the run that first stored it; an earlier run's setups still count.
            conds.append(or_(TradeRow.first_run_id.is_(None), TradeRow.first_run_id != exclude_run))
        stmt = select(
            func.count(),
            func.coalesce(func.sum(case((TradeRow.allowed, 1), else_=0)), 0),
            func.max(session),
        ).where(*conds)
        async with self.db.engine.connect() as conn:
            setups, allowed, last = (await conn.execute(stmt)).one()
        return PastOutcomes(
            setups=int(setups),
            allowed=int(allowed),
            last_session=date.fromisoformat(str(last)[:10]) if last else None,
        )
