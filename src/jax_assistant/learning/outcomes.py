"""Settling trade setups against the bars that came after them.

Rules (docs/learning.md, "Outcome rules"):

* **Fill.** ``next_open`` (default): filled at the open of the session after the setup's session.
  ``entry_touch``: filled at the setup's entry on the first of the next ``entry_window`` sessions whose
  range reaches it (a long fills when ``low <= entry``, at ``min(open, entry)``: a bar that opens
  below a buy limit fills at its open; shorts mirror this). Never touched: ``unfilled``, R 0.
* **Exit.** From the fill bar on (the fill bar included), the first bar whose range reaches the stop
  or the first target ends the trade. **When one bar reaches both, the stop is taken first** (daily
  bars do not say which came first; assuming the worse keeps the record honest). A bar that opens
  beyond the level exits at its open (a gap through the stop loses more than 1R).
* **Expiry.** After ``max_sessions`` sessions held (the fill bar is the first) with neither level
  reached, the trade is closed at that bar's close: ``expired``.
* **Known on** (``settled_through``): a settled outcome's date is the bar that decided it (the exit
  bar, or the last bar of an unfilled entry window), so settling later never changes it; an open
  one's is the last bar read.
* **R** is measured against the setup's planned risk ``|entry - stop|``; MFE/MAE are the best and
  worst excursions from the fill over the held bars (exit bar included), in R, both >= 0.

Settling reads only bars up to the settle date (``BarSeries.upto``), so an outcome never sees past
it: a trade still running on that date is ``open`` and is not stored, and is settled by a later call.
The evaluator is vectorised per symbol: every setup of the symbol is one row of a window matrix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from jax_assistant.domain import Direction, TradeRecord, TradeSetup, utc_now
from jax_assistant.marketdata.base import BarSeries

if TYPE_CHECKING:
    from jax_assistant.marketdata.base import MarketDataProvider
    from jax_assistant.memory.models import MemoryItem
    from jax_assistant.storage.repository import Repository

FillRule = Literal["next_open", "entry_touch"]
OutcomeStatus = Literal["target", "stop", "expired", "unfilled", "open"]
SETTLED: frozenset[str] = frozenset({"target", "stop", "expired", "unfilled"})


class OutcomeConfig(BaseModel):
    """How setups are settled (``[learning.outcomes]`` in the settings)."""

    model_config = ConfigDict(extra="forbid")

    fill: FillRule = Field(default="next_open", description="entry fill rule (docs/learning.md)")
    max_sessions: int = Field(default=10, ge=1, le=500, description="sessions held before expiry")
    entry_window: int = Field(
        default=3, ge=1, le=50, description="entry_touch: sessions after the setup in which it may fill"
    )

    @property
    def rule(self) -> str:
        """A short label stored with every outcome: which rules settled it."""
        extra = f"/w{self.entry_window}" if self.fill == "entry_touch" else ""
        return f"{self.fill}{extra}/max{self.max_sessions}/stop_first"


class TradeOutcome(BaseModel):
    """What happened to one setup after its session (``status`` ``open`` = not settled yet)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    setup_id: str
    symbol: str
    strategy_id: str
    event_type: str | None = None
    direction: Direction
    decided_on: date
    status: OutcomeStatus
    fill_on: date | None = None
    fill_price: float | None = None
    exit_on: date | None = None
    exit_price: float | None = None
    r_multiple: float = 0.0
    mfe_r: float = 0.0
    mae_r: float = 0.0
    sessions_held: int = 0
    days_held: int = 0
    settled_through: date
    rule: str

    @property
    def settled(self) -> bool:
        return self.status in SETTLED

    @property
    def won(self) -> bool:
        return self.settled and self.r_multiple > 0


def setup_session(setup: TradeSetup) -> date:
    """The session a setup was made on (its ``time``; setups without one cannot be settled)."""
    if setup.time is None:
        raise ValueError(f"setup {setup.id!r} has no time: cannot tell which bars come after it")
    return setup.time.date()


def event_type_of(setup: TradeSetup) -> str | None:
    """The triggering event's type, from the event id (``{type}:{symbol}:{date}``), if any."""
    if not setup.event_id:
        return None
    head = setup.event_id.split(":", 1)[0]
    return head or None


def evaluate(
    series: BarSeries, setups: Sequence[TradeSetup], config: OutcomeConfig, *, as_of: date
) -> list[TradeOutcome]:
    """Outcomes of ``setups`` (all of ``series.symbol``) from the bars up to ``as_of``, in input order."""
    if not setups:
        return []
    s = series.upto(as_of)
    n = len(s)
    through = s.last_date or as_of
    k = len(setups)
    sessions = np.array([np.datetime64(setup_session(x), "D") for x in setups])
    # Index of the setup's own bar; the first bar after it is where trading can start.
    start = np.searchsorted(s.dates, sessions, side="right")
    longs = np.array([x.direction is Direction.LONG for x in setups])
    sign = np.where(longs, 1.0, -1.0)
    entry = np.array([x.entry for x in setups])
    stop = np.array([x.stop for x in setups])
    target = np.array([x.targets[0] if x.targets else np.nan for x in setups])
    risk = np.abs(entry - stop)

    fill_i, fill_px = _fills(s, start, entry, longs, config)
    horizon = config.max_sessions
    offsets = np.arange(horizon)
    idx = fill_i[:, None] + offsets[None, :]
    valid = (fill_i[:, None] >= 0) & (idx < n)
    safe = np.clip(idx, 0, max(n - 1, 0))
    if n == 0:
        return [_unsettled(x, through, config) for x in setups]
    hi, lo, op, cl = s.high[safe], s.low[safe], s.open[safe], s.close[safe]
    st, tg = stop[:, None], target[:, None]
    lg = longs[:, None]
    hit_stop = valid & np.where(lg, lo <= st, hi >= st)
    with np.errstate(invalid="ignore"):
        hit_target = valid & ~np.isnan(tg) & np.where(lg, hi >= tg, lo <= tg)
    first_stop = _first_true(hit_stop, horizon)
    first_target = _first_true(hit_target, horizon)

    out: list[TradeOutcome] = []
    for r in range(k):
        setup = setups[r]
        base = {
            "setup_id": setup.id,
            "symbol": setup.symbol,
            "strategy_id": setup.strategy_id,
            "event_type": event_type_of(setup),
            "direction": setup.direction,
            "decided_on": setup_session(setup),
            "settled_through": through,
            "rule": config.rule,
        }
        if fill_i[r] == -2:  # never touched inside the entry window: settled, nothing traded
            last = s.date_at(min(n - 1, int(start[r]) + config.entry_window - 1))
            out.append(TradeOutcome(**(base | {"settled_through": last}), status="unfilled"))
            continue
        if fill_i[r] < 0:  # the fill bar is not there yet
            out.append(TradeOutcome(**base, status="open"))
            continue
        fs, ft = first_stop[r], first_target[r]
        held_bars = int(valid[r].sum())
        if fs < horizon and fs <= ft:  # stop first, also when the same bar reaches the target
            j, status = int(fs), "stop"
            level = stop[r]
            px = min(level, op[r, j]) if longs[r] else max(level, op[r, j])
        elif ft < horizon:
            j, status = int(ft), "target"
            level = target[r]
            px = max(level, op[r, j]) if longs[r] else min(level, op[r, j])
        elif held_bars >= horizon:
            j, status, px = horizon - 1, "expired", float(cl[r, horizon - 1])
        else:
            j, status, px = held_bars - 1, "open", float(cl[r, held_bars - 1])
        fill = float(fill_px[r])
        if j == 0 and status in ("stop", "target") and config.fill == "entry_touch":
            # A touch fill happens inside the bar, after its open: a stop beyond the fill price (the
            # bar gapped through both) exits at the fill, a target at its level.
            touch_stop = min(level, fill) if longs[r] else max(level, fill)
            px = touch_stop if status == "stop" else level
        best = hi[r, : j + 1].max() if longs[r] else lo[r, : j + 1].min()
        worst = lo[r, : j + 1].min() if longs[r] else hi[r, : j + 1].max()
        fill_day = s.date_at(int(fill_i[r]))
        exit_day = s.date_at(int(fill_i[r]) + j)
        out.append(
            TradeOutcome(
                **(base | {"settled_through": exit_day if status != "open" else through}),
                status=status,
                fill_on=fill_day,
                fill_price=round(fill, 6),
                exit_on=exit_day if status != "open" else None,
                exit_price=round(float(px), 6) if status != "open" else None,
                r_multiple=round(float(sign[r] * (px - fill) / risk[r]), 6),
                mfe_r=round(max(0.0, float(sign[r] * (best - fill) / risk[r])), 6),
                mae_r=round(max(0.0, float(sign[r] * (fill - worst) / risk[r])), 6),
                sessions_held=j + 1,
                days_held=(exit_day - fill_day).days,
            )
        )
    return out


def _unsettled(setup: TradeSetup, through: date, config: OutcomeConfig) -> TradeOutcome:
    return TradeOutcome(
        setup_id=setup.id,
        symbol=setup.symbol,
        strategy_id=setup.strategy_id,
        event_type=event_type_of(setup),
        direction=setup.direction,
        decided_on=setup_session(setup),
        status="open",
        settled_through=through,
        rule=config.rule,
    )


def _first_true(mask: npt.NDArray[np.bool_], missing: int) -> npt.NDArray[np.int64]:
    """Column of the first True per row, ``missing`` where a row has none."""
    any_ = mask.any(axis=1)
    return np.where(any_, mask.argmax(axis=1), missing).astype(np.int64)


def _fills(
    s: BarSeries,
    start: npt.NDArray[np.intp],
    entry: npt.NDArray[np.float64],
    longs: npt.NDArray[np.bool_],
    config: OutcomeConfig,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Fill bar index (-1: not known yet, -2: never filled) and fill price per setup."""
    n = len(s)
    k = start.shape[0]
    if config.fill == "next_open":
        there = start < n
        idx = np.where(there, start, -1).astype(np.int64)
        px = np.where(there, s.open[np.clip(start, 0, max(n - 1, 0))] if n else 0.0, np.nan)
        return idx, px
    w = config.entry_window
    idx2 = start[:, None] + np.arange(w)[None, :]
    valid = idx2 < n
    safe = np.clip(idx2, 0, max(n - 1, 0))
    if n == 0:
        return np.full(k, -1, dtype=np.int64), np.full(k, np.nan)
    lo, hi, op = s.low[safe], s.high[safe], s.open[safe]
    e = entry[:, None]
    touched = valid & np.where(longs[:, None], lo <= e, hi >= e)
    first = _first_true(touched, w)
    found = first < w
    complete = valid.all(axis=1)
    idx = np.where(found, start + first, np.where(complete, -2, -1)).astype(np.int64)
    col = np.clip(first, 0, w - 1)
    rows = np.arange(k)
    open_at = op[rows, col]
    px = np.where(longs, np.minimum(open_at, entry), np.maximum(open_at, entry))
    return idx, np.where(found, px, np.nan)


# --------------------------------------------------------------------------- settling stored setups


class SettleReport(BaseModel):
    """What one settle pass did."""

    model_config = ConfigDict(extra="forbid")

    as_of: date
    checked: int = 0  # unsettled setups looked at
    settled: int = 0  # newly stored outcomes
    still_open: int = 0
    unknown_symbols: list[str] = Field(default_factory=list)
    by_status: dict[str, int] = Field(default_factory=dict)


def outcome_row(outcome: TradeOutcome, *, allowed: bool, position_size: int) -> dict[str, Any]:
    """The stored row: the outcome plus the sizing it was taken at and the money it made."""
    row = outcome.model_dump(mode="python")
    row["direction"] = outcome.direction.value
    size = position_size if allowed else 0
    risk_per_unit = 0.0
    if outcome.fill_price is not None and outcome.exit_price is not None and outcome.r_multiple:
        risk_per_unit = abs(outcome.exit_price - outcome.fill_price) / abs(outcome.r_multiple)
    row.update(
        allowed=allowed,
        position_size=size,
        pnl=round(outcome.r_multiple * risk_per_unit * size, 6),
        settled_at=utc_now(),
    )
    return row


def outcome_from_row(row: Mapping[str, Any]) -> TradeOutcome:
    fields = TradeOutcome.model_fields
    return TradeOutcome.model_validate({k: v for k, v in row.items() if k in fields})


async def settle(
    repo: Repository, provider: MarketDataProvider, config: OutcomeConfig, *, as_of: date
) -> SettleReport:
    """Settle every stored setup whose outcome is known from the bars up to ``as_of``; idempotent
    (settled setups are not read again, and rewriting one would store the same values)."""
    trades = await repo.unsettled_trades()
    report = SettleReport(as_of=as_of, checked=len(trades))
    known = set(provider.symbols())
    by_symbol: dict[str, list[TradeRecord]] = {}
    for t in trades:
        if t.setup.time is not None and t.setup.time.date() < as_of:
            by_symbol.setdefault(t.setup.symbol, []).append(t)
    rows: list[dict[str, Any]] = []
    for symbol in sorted(by_symbol):
        if symbol not in known:
            report.unknown_symbols.append(symbol)
            continue
        records = by_symbol[symbol]
        series = provider.bars(symbol, as_of)
        for record, outcome in zip(
            records, evaluate(series, [r.setup for r in records], config, as_of=as_of), strict=True
        ):
            if not outcome.settled:
                report.still_open += 1
                continue
            report.by_status[outcome.status] = report.by_status.get(outcome.status, 0) + 1
            rows.append(
                outcome_row(outcome, allowed=record.risk.allowed, position_size=record.risk.position_size)
            )
    report.settled = await repo.save_outcomes(rows) if rows else 0
    return report


_CONTRACT_FIELDS: Final = {
    "status": "status",
    "fill_on": "fillOn",
    "fill_price": "fillPrice",
    "exit_on": "exitOn",
    "exit_price": "exitPrice",
    "r_multiple": "rMultiple",
    "mfe_r": "mfeR",
    "mae_r": "maeR",
    "sessions_held": "sessionsHeld",
    "days_held": "daysHeld",
    "pnl": "pnl",
    "rule": "rule",
}


def with_outcome(trade: dict[str, Any], row: Mapping[str, Any] | None) -> dict[str, Any]:
    """A trade's contract JSON plus ``outcome`` (camelCase) once it is settled; unchanged before."""
    if row is None:
        return trade
    outcome = {
        out: (row[col].isoformat() if isinstance(row[col], date) else row[col])
        for col, out in _CONTRACT_FIELDS.items()
    }
    return {**trade, "outcome": outcome}


def outcome_memory_item(row: Mapping[str, Any]) -> MemoryItem:
    """A settled outcome as a ``trade_outcome`` memory item for the ``trade_outcomes`` bank.

    ``data.outcome`` is ``win``/``loss`` and ``data.r_multiple`` the realised R, which is what the
    old ``outcome_balance`` belief reads; ``document_id`` is the setup id, so retaining twice is one memory.
    """
    from jax_assistant.memory.beliefs import TRADE_OUTCOME_TYPE
    from jax_assistant.memory.models import MemoryItem

    data = {k: (v.isoformat() if isinstance(v, date | datetime) else v) for k, v in row.items()}
    r = float(row["r_multiple"])
    data["outcome"] = "win" if r > 0 else "loss" if r < 0 else "flat"
    when = row.get("settled_through") or row["decided_on"]
    return MemoryItem(
        ts=datetime.combine(when, time(21), UTC),
        type=TRADE_OUTCOME_TYPE,
        symbol=row["symbol"],
        tags=["outcome", str(row["status"]), str(row["strategy_id"]).lower()],
        summary=(
            f"{row['symbol']} {row['strategy_id']}: {row['status']} {r:+.2f}R "
            f"({row['sessions_held']} sessions)"
        ),
        data=data,
        source={"system": "jax-orchestrator", "ref": str(row["setup_id"])},
        document_id=str(row["setup_id"]),
    )
