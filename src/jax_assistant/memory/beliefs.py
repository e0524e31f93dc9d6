"""The deterministic reasoner: track-record beliefs from settled trade outcomes.

Pure functions of their inputs (no clock, no storage): the same outcomes always give the same
beliefs, byte for byte, which is what lets a replay be re-run and compared.

Belief types (``data.belief_type``), each in the contract's shape (``time_window``, ``evidence_ids``,
``confidence``) plus its statistics:

* ``strategy_track_record``: one per strategy;
* ``strategy_event_track_record``: one per (strategy, triggering event type);
* ``symbol_track_record``: one per symbol.

Statistics: ``sample_size`` (trades that were filled), ``win_rate`` with a 95 % Wilson interval,
``average_r`` with a 95 % Student-t interval, ``expectancy`` (win rate x average win - loss rate x
average loss, in R), ``profit_factor``. "No single anecdote becomes a law": ``confidence`` is
``n / (n + prior_strength)``, so three trades give a belief of confidence 0.13 at the default
strength 20, and the weighting (``strategies/weighting.py``) shrinks expectancy by the same amount.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, date, datetime, time
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from jax_assistant.memory.models import BELIEF_TYPE, REFLECTION_SYSTEM, BeliefData, MemoryItem, TimeWindow

BeliefType = Literal["strategy_track_record", "strategy_event_track_record", "symbol_track_record"]
DEFAULT_PRIOR_STRENGTH: Final = 20.0
_Z95: Final = 1.959963984540054
# Two-sided 95 % Student-t quantiles by degrees of freedom (1..30); beyond 30 the normal's is close.
_T95: Final = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


class OutcomeEvidence(BaseModel):
    """One settled, filled trade as the reasoner sees it (a row of ``trade_outcomes``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    setup_id: str
    strategy_id: str
    symbol: str
    event_type: str | None = None
    exit_on: date
    r_multiple: float


class TrackRecord(BaseModel):
    """The statistics of a group of outcomes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_size: int
    wins: int
    losses: int
    win_rate: float
    win_rate_interval: tuple[float, float]
    average_r: float
    r_interval: tuple[float, float] | None  # None below two trades: one trade bounds nothing
    expectancy: float
    profit_factor: float | None  # None when there is no loss to divide by


class Belief(BaseModel):
    """A belief in the contract's shape (``data`` of a ``belief`` memory item) plus its statistics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    belief_type: BeliefType
    strategy_id: str | None = None
    event_type: str | None = None
    symbol: str | None = None
    time_window: tuple[date, date]
    evidence_ids: list[str]
    confidence: float = Field(ge=0.0, le=1.0)
    record: TrackRecord
    summary: str

    def data(self) -> BeliefData:
        """The contract's ``data`` block (``time_window`` as RFC 3339 bounds of whole days)."""
        start, end = self.time_window
        return BeliefData.model_validate(
            {
                "belief_type": self.belief_type,
                "time_window": TimeWindow.model_validate(
                    {"from": datetime.combine(start, time(), UTC), "to": datetime.combine(end, time.max, UTC)}
                ),
                "evidence_ids": list(self.evidence_ids),
                "confidence": self.confidence,
                "strategy_id": self.strategy_id,
                "event_type": self.event_type,
                "symbol": self.symbol,
                **self.record.model_dump(mode="json"),
            }
        )

    def to_memory_item(self) -> MemoryItem:
        """The belief as a memory item for the ``strategy_beliefs`` bank (idempotent by ``document_id``)."""
        tags = [t for t in ("belief", self.belief_type, self.strategy_id, self.event_type) if t]
        return MemoryItem(
            ts=datetime.combine(self.time_window[1], time.max, UTC),
            type=BELIEF_TYPE,
            symbol=self.symbol,
            tags=[t.lower() for t in tags],
            summary=self.summary,
            data=self.data().model_dump(mode="json", by_alias=True),
            source={"system": REFLECTION_SYSTEM, "ref": self.id},
            document_id=self.id,
        )


def t_quantile_95(df: int) -> float:
    if df < 1:
        return math.inf
    return _T95[df - 1] if df <= len(_T95) else _Z95 + 2.4 / df  # within 0.002 of the exact value


def wilson_interval(wins: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval of a win rate (well-behaved at 0 and n, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6))


def track_record(r_values: Sequence[float]) -> TrackRecord:
    n = len(r_values)
    wins = [r for r in r_values if r > 0]
    losses = [r for r in r_values if r <= 0]
    mean = sum(r_values) / n if n else 0.0
    if n > 1:
        sd = math.sqrt(sum((r - mean) ** 2 for r in r_values) / (n - 1))
        half = t_quantile_95(n - 1) * sd / math.sqrt(n)
        r_interval = (round(mean - half, 6), round(mean + half, 6))
    else:
        r_interval = None
    win_rate = len(wins) / n if n else 0.0
    avg_win = sum(wins) / len(wins) if wins else 0.0
    avg_loss = -sum(losses) / len(losses) if losses else 0.0
    gross_loss = -sum(losses)
    return TrackRecord(
        sample_size=n,
        wins=len(wins),
        losses=len(losses),
        win_rate=round(win_rate, 6),
        win_rate_interval=wilson_interval(len(wins), n),
        average_r=round(mean, 6),
        r_interval=r_interval,
        expectancy=round(win_rate * avg_win - (1 - win_rate) * avg_loss, 6),
        profit_factor=round(sum(wins) / gross_loss, 6) if gross_loss > 0 else None,
    )


def evidence_confidence(n: int, prior_strength: float = DEFAULT_PRIOR_STRENGTH) -> float:
    """How far a belief of ``n`` trades may move anything: 0 with no trades, 1/2 at the prior's strength."""
    return round(n / (n + prior_strength), 6) if n > 0 else 0.0


def _belief_id(kind: str, key: str, window: tuple[date, date], evidence: Sequence[str]) -> str:
    digest = hashlib.sha256(
        "\n".join([kind, key, window[0].isoformat(), window[1].isoformat(), *evidence]).encode()
    )
    return f"belief_{digest.hexdigest()[:16]}"


def reflect_outcomes(
    outcomes: Iterable[OutcomeEvidence],
    *,
    as_of: date,
    window_days: int | None = None,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
    min_samples: int = 1,
    kinds: Collection[BeliefType] | None = None,
) -> list[Belief]:
    """Beliefs from the outcomes that exited on or before ``as_of`` (and within ``window_days`` of it).

    Outcomes exiting after ``as_of`` are ignored, never an error: a replay as of D cannot know them.
    ``kinds`` limits the belief types computed (default: all). Sorted by belief type, then subject.
    """
    start = date.fromordinal(as_of.toordinal() - window_days + 1) if window_days else None
    chosen = sorted(
        (o for o in outcomes if o.exit_on <= as_of and (start is None or o.exit_on >= start)),
        key=lambda o: (o.exit_on, o.setup_id),
    )
    groups: list[tuple[BeliefType, Callable[[OutcomeEvidence], tuple[str, ...] | None]]] = [
        ("strategy_track_record", lambda o: (o.strategy_id,)),
        ("strategy_event_track_record", lambda o: (o.strategy_id, o.event_type) if o.event_type else None),
        ("symbol_track_record", lambda o: (o.symbol,)),
    ]
    beliefs: list[Belief] = []
    for kind, key_of in groups:
        if kinds is not None and kind not in kinds:
            continue
        buckets: dict[tuple[str, ...], list[OutcomeEvidence]] = {}
        for o in chosen:
            key = key_of(o)
            if key is not None:
                buckets.setdefault(key, []).append(o)
        for key in sorted(buckets):
            members = buckets[key]
            if len(members) < min_samples:
                continue
            beliefs.append(_belief(kind, key, members, as_of, start, prior_strength))
    return beliefs


def _belief(
    kind: BeliefType,
    key: tuple[str, ...],
    members: list[OutcomeEvidence],
    as_of: date,
    start: date | None,
    prior_strength: float,
) -> Belief:
    record = track_record([o.r_multiple for o in members])
    window = (start or members[0].exit_on, as_of)
    evidence = [o.setup_id for o in members]
    subject: dict[str, Any] = {}
    if kind == "symbol_track_record":
        subject["symbol"] = key[0]
        label = key[0]
    else:
        subject["strategy_id"] = key[0]
        label = key[0]
        if kind == "strategy_event_track_record":
            subject["event_type"] = key[1]
            label = f"{key[0]} on {key[1]}"
    lo, hi = record.win_rate_interval
    summary = (
        f"{label}: {record.sample_size} trades, win rate {record.win_rate:.0%} (95% {lo:.0%}-{hi:.0%}), "
        f"expectancy {record.expectancy:+.2f}R, average {record.average_r:+.2f}R"
    )
    return Belief(
        id=_belief_id(kind, "|".join(key), window, evidence),
        belief_type=kind,
        time_window=window,
        evidence_ids=evidence,
        confidence=evidence_confidence(record.sample_size, prior_strength),
        record=record,
        summary=summary,
        **subject,
    )


# --------------------------------------------------------------------------- memory-item adapters

TRADE_OUTCOME_TYPE: Final = "trade_outcome"


def evidence_from_items(items: Iterable[MemoryItem]) -> list[OutcomeEvidence]:
    """Settled outcomes retained to the ``trade_outcomes`` bank (see ``outcome_memory_item``)."""
    out: list[OutcomeEvidence] = []
    for item in items:
        data = item.data or {}
        if item.type != TRADE_OUTCOME_TYPE or data.get("exit_on") is None:
            continue
        out.append(OutcomeEvidence.model_validate(data))
    return out


def track_record_items(
    items: Sequence[MemoryItem], *, as_of: date, window_days: int | None
) -> list[MemoryItem]:
    """The track-record beliefs of ``items`` as ``belief`` memory items: what ``memory.reflect`` adds to
    the old ``outcome_balance`` / ``tag_pattern`` beliefs (``memory/reflection.reflect_items``)."""
    return [
        b.to_memory_item()
        for b in reflect_outcomes(evidence_from_items(items), as_of=as_of, window_days=window_days)
    ]
