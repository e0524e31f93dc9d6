"""``jax replay``: walk real history day by day, decide, settle, reflect, with no look-ahead.

Why not call the per-symbol stage engine 252 times: one day of 505 symbols costs ~5 s through it, so a
year would take ~20 minutes. The replay instead reuses the same rule code in a cheaper shape:

* **Data is loaded once** and each symbol's detection (``analysis.detect_events``) and setup generation
  (``StrategyRegistry.generate``) run ONCE over the whole window with ``lookback`` = the window's
  sessions. Detectors and strategies are causal (a session's result reads only bars up to it: the
  project's prefix-invariance tests), so the setups of session D are exactly what ``jax run --as-of D``
  generates; ``tests/learning/test_replay.py`` checks this against ``jax run`` on sample days.
* **Outcomes are evaluated once** per symbol (``learning.outcomes.evaluate``, vectorised) with the
  bars up to the window's end, and each becomes *known* only on the session that decided it
  (``settled_through``: its exit bar, or the last bar of an unfilled entry window). A trade still
  running at the end is never known. Settling on day D with the bars up to D gives the same settled
  outcomes, so this is the same rule, evaluated once.
* **Each day** then costs only its own setups: their weights (``registry.shape``: the day's beliefs),
  sizing (``RiskManager.candidate``), suspension (``registry.admit``), the protections fed by the
  realised outcomes (``risk.protections.state_from_outcomes``) and the portfolio allocation
  (``risk.allocation.allocate``, with correlations from the closes up to D). A day with nothing to
  decide only closes the positions whose outcome became known.
* **Reflection** runs every ``reflect_every`` sessions on the outcomes known so far (all setups, the
  allocated ones and the paper-tracked rest: a suspended strategy can earn its way back) within
  ``window_days``; the learning arm applies the resulting weights from that day on, the static arm never.
* **Checkpoints**: the state of both arms is written atomically every ``checkpoint_every`` sessions;
  a replay killed mid-way resumes from the last checkpoint and ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from jax_assistant.analysis.correlation import return_correlations
from jax_assistant.analysis.detectors import DetectorConfig, detect_events
from jax_assistant.domain import Direction, Event, RiskResult, TradeRecord, TradeSetup, utc_now
from jax_assistant.domain.errors import InputError
from jax_assistant.learning.outcomes import OutcomeConfig, TradeOutcome, evaluate
from jax_assistant.marketdata.base import MarketDataProvider
from jax_assistant.memory.beliefs import Belief, BeliefType, OutcomeEvidence, reflect_outcomes
from jax_assistant.risk.allocation import Candidate, allocate, rank_key
from jax_assistant.risk.constraints import RiskConstraints
from jax_assistant.risk.manager import RiskManager
from jax_assistant.risk.portfolio import PortfolioState
from jax_assistant.risk.protections import RealisedTrade, state_from_outcomes
from jax_assistant.strategies.registry import StrategyRegistry
from jax_assistant.strategies.weighting import (
    StrategyWeight,
    WeightingConfig,
    apply_weights,
    strategy_weights,
)

ArmName = Literal["learning", "static"]
_ALLOCATE_CHUNK = 32
_SCHEDULED_KINDS: tuple[BeliefType, ...] = ("strategy_track_record",)


class ReplayParams(BaseModel):
    """Everything that decides a replay's result (its checkpoint key is a hash of these)."""

    model_config = ConfigDict(extra="forbid")

    start: date
    end: date
    symbols: list[str] = Field(min_length=1)
    compare_static: bool = False
    reflect_every: int = Field(default=5, ge=1, le=1000, description="sessions between reflections")
    window_days: int | None = Field(default=365, ge=1, description="beliefs read outcomes this recent")
    account_size: float = Field(default=10_000.0, gt=0)
    risk_percent: float = Field(default=3.0, gt=0, le=100)
    outcome: OutcomeConfig = Field(default_factory=OutcomeConfig)
    weighting: WeightingConfig = Field(default_factory=WeightingConfig)
    checkpoint_every: int = Field(default=5, ge=1, description="sessions between checkpoints")

    @model_validator(mode="after")
    def _order(self) -> ReplayParams:
        if self.end < self.start:
            raise InputError(
                f"--to {self.end.isoformat()} is before --from {self.start.isoformat()}",
                field="to",
                rule="after_from",
            )
        return self

    @property
    def arms(self) -> list[ArmName]:
        return ["learning", "static"] if self.compare_static else ["learning"]

    def key(self) -> str:
        """Checkpoint key: the result-deciding params (``checkpoint_every`` does not change results)."""
        payload = self.model_dump(mode="json", exclude={"checkpoint_every"})
        return "replay_" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- prepared once


@dataclass
class Universe:
    """What the replay computes once: sessions, every raw setup by session, every outcome."""

    sessions: list[date]
    setups: dict[date, list[TradeSetup]]
    events: dict[str, Event]
    outcomes: dict[str, TradeOutcome]
    evidence_by_day: dict[date, list[OutcomeEvidence]]
    closes: dict[str, tuple[npt.NDArray[np.datetime64], npt.NDArray[np.float64]]]
    sectors: dict[str, str | None]
    skipped: list[str] = field(default_factory=list)


def prepare(
    provider: MarketDataProvider,
    registry: StrategyRegistry,
    detectors: DetectorConfig,
    params: ReplayParams,
) -> Universe:
    """Detect, generate and evaluate every symbol once over the window (see the module docstring)."""
    first, last = np.datetime64(params.start, "D"), np.datetime64(params.end, "D")
    days: set[date] = set()
    setups: dict[date, list[TradeSetup]] = {}
    events: dict[str, Event] = {}
    outcomes: dict[str, TradeOutcome] = {}
    evidence: dict[date, list[OutcomeEvidence]] = {}
    closes: dict[str, tuple[npt.NDArray[np.datetime64], npt.NDArray[np.float64]]] = {}
    sectors: dict[str, str | None] = {}
    skipped: list[str] = []
    for symbol in params.symbols:
        series = provider.bars(symbol, params.end)
        lo, hi = np.searchsorted(series.dates, [first, last], side="left")
        hi = int(np.searchsorted(series.dates, last, side="right"))
        window = hi - int(lo)
        if window <= 0:
            skipped.append(symbol)
            continue
        days.update(series.dates[int(lo) : hi].astype("datetime64[D]").tolist())
        closes[symbol] = (series.dates, series.close)
        sectors[symbol] = provider.sector(symbol)
        found = detect_events(
            series, provider.earnings_reports(symbol), detectors, lookback=window, as_of=params.end
        )
        events.update((e.id, e) for e in found)
        raw = registry.generate(series, found, as_of=params.end, lookback=window)
        for setup, outcome in zip(raw, evaluate(series, raw, params.outcome, as_of=params.end), strict=True):
            assert setup.time is not None
            setups.setdefault(setup.time.date(), []).append(setup)
            outcomes[setup.id] = outcome
            if outcome.settled and outcome.fill_on is not None:
                evidence.setdefault(outcome.settled_through, []).append(
                    OutcomeEvidence(
                        setup_id=outcome.setup_id,
                        strategy_id=outcome.strategy_id,
                        symbol=outcome.symbol,
                        event_type=outcome.event_type,
                        exit_on=outcome.settled_through,
                        r_multiple=outcome.r_multiple,
                    )
                )
    return Universe(sorted(days), setups, events, outcomes, evidence, closes, sectors, skipped)


# --------------------------------------------------------------------------- the state of one arm


class TakenTrade(BaseModel):
    """An allocated (allowed) setup of one arm, with what the beliefs did to it."""

    model_config = ConfigDict(extra="forbid")

    setup_id: str
    symbol: str
    strategy_id: str
    decided_on: date
    size: int
    confidence: float
    weight: float
    belief_id: str | None = None


class WeightPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: date
    weights: dict[str, float]
    suspended: list[str]
    beliefs: list[str]


class ArmState(BaseModel):
    """Everything one arm carries from day to day (the checkpoint)."""

    model_config = ConfigDict(extra="forbid")

    name: ArmName
    state: PortfolioState
    open_until: dict[str, date | None] = Field(default_factory=dict)  # setup id -> known on
    weights: dict[str, StrategyWeight] = Field(default_factory=dict)
    equity: list[tuple[date, float]] = Field(default_factory=list)
    weight_history: list[WeightPoint] = Field(default_factory=list)
    taken: list[TakenTrade] = Field(default_factory=list)
    rejected_suspended: int = 0


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    next_day: int
    arms: list[ArmState]
    reflections: int = 0


ProgressHook = Callable[[int, int, date], None]


@dataclass
class ReplayResult:
    params: ReplayParams
    universe: Universe
    arms: dict[ArmName, ArmState]
    resumed_from: int
    records: dict[ArmName, list[TradeRecord]]
    beliefs: list[Belief]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Replayer:
    """Runs one replay (both arms in lockstep over the same prepared universe)."""

    def __init__(
        self,
        provider: MarketDataProvider,
        params: ReplayParams,
        *,
        detectors: DetectorConfig,
        constraints: RiskConstraints,
        registry_factory: Callable[[], StrategyRegistry],
        state_dir: Path | None = None,
        stop_after: int | None = None,
    ) -> None:
        self.provider = provider
        self.params = params
        self.detectors = detectors
        self.constraints = constraints
        self.registry_factory = registry_factory
        self.checkpoint_path = state_dir / f"{params.key()}.json" if state_dir is not None else None
        self.stop_after = stop_after  # sessions to run this call (tests/benchmarks stop early)

    def _load(self) -> Checkpoint | None:
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return None
        cp = Checkpoint.model_validate_json(self.checkpoint_path.read_text(encoding="utf-8"))
        return cp if cp.key == self.params.key() else None

    def _save(self, cp: Checkpoint) -> None:
        if self.checkpoint_path is not None:
            _atomic_write(self.checkpoint_path, cp.model_dump_json())

    def run(self, progress: ProgressHook | None = None) -> ReplayResult:
        # The day's correlation matrix is small (a few hundred symbols x 60 returns): BLAS threads only
        # contend for the cores (measured 100 ms vs 8 ms per matrix on a busy 2-core machine).
        with threadpool_limits(limits=1, user_api="blas"):
            return self._run(progress)

    def _run(self, progress: ProgressHook | None) -> ReplayResult:
        p = self.params
        universe = prepare(self.provider, self.registry_factory(), self.detectors, p)
        registries = {name: self.registry_factory() for name in p.arms}
        risk = RiskManager(self.constraints, account_size=p.account_size, risk_percent=p.risk_percent)
        cp = self._load()
        resumed_from = cp.next_day if cp is not None else 0
        if cp is None:
            base = PortfolioState(account_size=p.account_size)
            cp = Checkpoint(key=p.key(), next_day=0, arms=[ArmState(name=n, state=base) for n in p.arms])
        arms = {a.name: a for a in cp.arms}
        for name, arm in arms.items():
            apply_weights(registries[name], arm.weights)
        known: list[OutcomeEvidence] = []
        for day in universe.sessions[: cp.next_day]:
            known.extend(universe.evidence_by_day.get(day, ()))
        sizing: dict[str, RiskResult] = {}  # a setup's candidate sizing does not depend on its weight
        beliefs: list[Belief] = []
        total = len(universe.sessions)
        stop = total if self.stop_after is None else min(total, cp.next_day + self.stop_after)
        for i in range(cp.next_day, stop):
            day = universe.sessions[i]
            known.extend(universe.evidence_by_day.get(day, ()))
            reflect_now = i % p.reflect_every == 0
            if reflect_now:
                # The schedule needs only what the weights read; the full set is reflected at the end.
                beliefs = reflect_outcomes(
                    known,
                    as_of=day,
                    window_days=p.window_days,
                    prior_strength=p.weighting.prior_strength,
                    kinds=_SCHEDULED_KINDS,
                )
                cp.reflections += 1
                weights = strategy_weights(beliefs, p.weighting)
                arms["learning"].weights = weights
                apply_weights(registries["learning"], weights)
            for name, arm in arms.items():
                self._day(arm, registries[name], risk, universe, day, sizing)
                if reflect_now or i == 0:
                    arm.weight_history.append(
                        WeightPoint(
                            day=day,
                            weights={sid: registries[name].weight(sid) for sid in registries[name].ids},
                            suspended=sorted(registries[name].suspended),
                            beliefs=[w.belief_id for w in arm.weights.values()],
                        )
                    )
            cp.next_day = i + 1
            if cp.next_day % p.checkpoint_every == 0 or cp.next_day == total:
                self._save(cp)
            if progress is not None:
                progress(i + 1, total, day)
        self._save(cp)
        last = universe.sessions[stop - 1] if stop else p.start
        beliefs = reflect_outcomes(
            known, as_of=last, window_days=p.window_days, prior_strength=p.weighting.prior_strength
        )
        records = {name: self._records(arm, universe, sizing, risk) for name, arm in arms.items()}
        return ReplayResult(p, universe, arms, resumed_from, records, beliefs)

    def _day(
        self,
        arm: ArmState,
        registry: StrategyRegistry,
        risk: RiskManager,
        universe: Universe,
        day: date,
        sizing: dict[str, RiskResult],
    ) -> None:
        # 1. Positions whose outcome became known by today's close leave the book; their P&L feeds
        #    the protections (equity, peak, today's loss, stop-out cooldowns).
        closing = [sid for sid, until in arm.open_until.items() if until is not None and until <= day]
        realised: list[RealisedTrade] = []
        if closing:
            sizes = {pos.setup_id: pos.size for pos in arm.state.open_positions}
            for sid in closing:
                o = universe.outcomes[sid]
                del arm.open_until[sid]
                if o.fill_price is None or o.exit_price is None:
                    continue  # never filled: nothing was traded
                sign = 1.0 if o.direction is Direction.LONG else -1.0
                pnl = sign * (o.exit_price - o.fill_price) * sizes.get(sid, 0)
                realised.append(RealisedTrade(o.symbol, o.settled_through, pnl, stopped=o.status == "stop"))
            gone = set(closing)
            arm.state = arm.state.model_copy(
                update={"open_positions": [x for x in arm.state.open_positions if x.setup_id not in gone]}
            )
        arm.state = state_from_outcomes(
            arm.state.model_copy(update={"realised_pnl_today": 0.0}), realised, as_of=day
        )
        # 2. Today's setups, shaped by the arm's current beliefs, sized, gated and allocated.
        # Sizing reads no confidence, so it is computed once per setup for both arms; only the
        # candidates it leaves eligible are shaped (weights change their score, never eligibility):
        # allocate() rejects an ineligible candidate without touching the book.
        candidates: list[Candidate] = []
        for raw in universe.setups.get(day, ()):
            sized = sizing.get(raw.id)
            if sized is None:
                cap = getattr(registry.get(raw.strategy_id), "max_risk_percent", None)
                sized = sizing[raw.id] = risk.candidate(raw, strategy_max_risk_percent=cap)
            if not (sized.constraints.allowed and sized.position_size > 0):
                continue
            setup = registry.shape(raw)
            gated = registry.admit(setup, sized)
            if gated is not sized:
                arm.rejected_suspended += 1
                continue
            candidates.append(Candidate(setup=setup, risk=gated, sector=universe.sectors.get(raw.symbol)))
        eligible = sorted((c for c in candidates if c.eligible), key=rank_key)
        if eligible:
            held = {pos.symbol for pos in arm.state.open_positions}
            wanted = sorted({c.setup.symbol for c in eligible} | held)  # as the allocate stage does
            window = self.constraints.portfolio_constraints.correlation_window
            matrix = return_correlations(_recent(universe, wanted, day, window), day, window=window)
            max_positions = self.constraints.portfolio_constraints.max_positions
            # allocate() places candidates in rank order and only an allowed one changes the book, so
            # feeding it the ranked candidates a few at a time books exactly the same positions; once
            # the book is full every later candidate is TOO_MANY_OPEN_POSITIONS and is not placed at
            # all (most days have hundreds of candidates and room for a few). Ineligible candidates
            # never touch the book either.
            for lo in range(0, len(eligible), _ALLOCATE_CHUNK):
                if len(arm.state.open_positions) >= max_positions:
                    break
                chunk = eligible[lo : lo + _ALLOCATE_CHUNK]
                result = allocate(chunk, arm.state, self.constraints, as_of=day, correlation=matrix.get)
                arm.state = result.state
                for c, decision in zip(chunk, result.decisions, strict=True):
                    if decision.allowed:
                        self._take(arm, registry, universe, c, decision, day)
        arm.equity.append((day, round(arm.state.equity, 2)))

    @staticmethod
    def _take(
        arm: ArmState,
        registry: StrategyRegistry,
        universe: Universe,
        c: Candidate,
        decision: RiskResult,
        day: date,
    ) -> None:
        o = universe.outcomes[c.setup.id]
        arm.open_until[c.setup.id] = o.settled_through if o.settled else None
        w = arm.weights.get(c.setup.strategy_id)
        arm.taken.append(
            TakenTrade(
                setup_id=c.setup.id,
                symbol=c.setup.symbol,
                strategy_id=c.setup.strategy_id,
                decided_on=day,
                size=decision.position_size,
                confidence=c.setup.confidence,
                weight=registry.weight(c.setup.strategy_id),
                belief_id=w.belief_id if w is not None else None,
            )
        )

    def _records(
        self, arm: ArmState, universe: Universe, sizing: dict[str, RiskResult], risk: RiskManager
    ) -> list[TradeRecord]:
        """The arm's allocated trades as storable records: the setup as shaped on its day (its notes
        cite the belief that set its weight) with the size it was allocated."""
        by_id = {s.id: s for day in universe.setups.values() for s in day}
        registry = self.registry_factory()
        out: list[TradeRecord] = []
        for t in arm.taken:
            raw = by_id[t.setup_id]
            note = f"replay {self.params.key()} ({arm.name}): weight x{t.weight:.4f}"
            if t.belief_id:
                note += f" from belief {t.belief_id}"
            setup = raw.model_copy(
                update={"confidence": t.confidence, "notes": f"{raw.notes}; {note}" if raw.notes else note}
            )
            cand = sizing.get(t.setup_id)
            if cand is None:  # decided before a resume: the same sizing, computed again
                cap = getattr(registry.get(raw.strategy_id), "max_risk_percent", None)
                cand = risk.candidate(raw, strategy_max_risk_percent=cap)
            decision = cand.model_copy(
                update={
                    "decision": "allocated",
                    "position_size": t.size,
                    "total_risk": round(cand.risk_per_unit * t.size, 6),
                }
            )
            event = universe.events.get(raw.event_id) if raw.event_id else None
            out.append(TradeRecord(setup=setup, risk=decision, event=event, created_at=raw.time or utc_now()))
        return out


def _recent(universe: Universe, symbols: Sequence[str], day: date, window: int) -> dict[str, _Closes]:
    """Each symbol's last ``window + 1`` closes up to ``day``: the correlation's calendar is the last
    window + 1 dates of the union, and any such date is among the last window + 1 of every symbol
    that has it, so this slice gives exactly the matrix of the full series (and reads no later bar)."""
    end = np.datetime64(day, "D")
    out: dict[str, _Closes] = {}
    for s in symbols:
        if s not in universe.closes:
            continue
        dates, close = universe.closes[s]
        n = int(np.searchsorted(dates, end, side="right"))
        lo = max(0, n - window - 1)
        out[s] = _Closes(dates[lo:n], close[lo:n])
    return out


@dataclass(frozen=True)
class _Closes:
    dates: npt.NDArray[np.datetime64]
    close: npt.NDArray[np.float64]


def outcome_json(o: TradeOutcome) -> dict[str, Any]:
    return o.model_dump(mode="json")
