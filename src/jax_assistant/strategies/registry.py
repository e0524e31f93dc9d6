"""The strategy registry: config strategies (JSON) and code strategies, looked up by id.

``weights`` holds one multiplier per strategy (1.0 by default). Reflection/beliefs adjust it; a
setup's confidence is multiplied by its strategy's weight and capped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from jax_assistant.domain import Event, RiskResult, TradeSetup
from jax_assistant.domain.errors import ConfigError
from jax_assistant.strategies.code import CODE_STRATEGIES, IndicatorCache, IndicatorStrategy
from jax_assistant.strategies.config import default_strategies_dir, load_strategy_configs
from jax_assistant.strategies.rules import ConfigStrategy

if TYPE_CHECKING:
    from jax_assistant.marketdata.base import BarSeries


@runtime_checkable
class Strategy(Protocol):
    """What the registry needs from a strategy (both kinds implement it)."""

    @property
    def id(self) -> str: ...

    @property
    def max_risk_percent(self) -> float | None:
        """The strategy's own risk cap in percent, or None to use the risk settings."""
        ...

    def generate(
        self,
        series: BarSeries,
        events: Iterable[Event],
        *,
        as_of: date | None = None,
        lookback: int = 1,
    ) -> list[TradeSetup]: ...


class UnknownStrategyError(ConfigError, KeyError):
    def __init__(self, strategy_id: str, known: Iterable[str]) -> None:
        self.strategy_id = strategy_id
        names = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown strategy {strategy_id!r} (known strategies: {names})")

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0])


class StrategyRegistry:
    """Strategies by id, with per-strategy confidence weights."""

    def __init__(
        self, strategies: Iterable[Strategy] = (), weights: Mapping[str, float] | None = None
    ) -> None:
        self._strategies: dict[str, Strategy] = {}
        self.weights: dict[str, float] = {}
        # Set by strategies.weighting from the current beliefs (empty without any): the note each
        # setup of a strategy carries, and the strategies whose setups are paper-tracked only.
        self.influence: dict[str, str] = {}
        self.suspended: dict[str, str] = {}
        for strategy in strategies:
            self.add(strategy)
        for sid, w in (weights or {}).items():
            self.get(sid)  # a weight for an unknown strategy is a typo: say so
            self.weights[sid] = float(w)

    @classmethod
    def default(
        cls, strategies_dir: Path | None = None, enabled: list[str] | None = None
    ) -> StrategyRegistry:
        """The config strategies of ``strategies_dir`` (default: the bundled ones) plus the code strategies.

        ``enabled`` None keeps every strategy whose config is enabled; a list keeps exactly those ids
        (naming a strategy enables it even if its file says ``"enabled": false``) and rejects unknown ids.
        """
        configs = load_strategy_configs(strategies_dir or default_strategies_dir())
        available: dict[str, Strategy] = {}
        switched_on: set[str] = set()
        for cfg in configs:
            if cfg.id in CODE_STRATEGIES:
                raise ValueError(f"strategy config id {cfg.id!r} clashes with the code strategy of that name")
            available[cfg.id] = ConfigStrategy(cfg)
            if cfg.enabled:
                switched_on.add(cfg.id)
        for sid, strategy_cls in CODE_STRATEGIES.items():
            available[sid] = strategy_cls()
            switched_on.add(sid)
        if enabled is None:
            return cls(s for sid, s in available.items() if sid in switched_on)
        for sid in enabled:
            if sid not in available:
                raise UnknownStrategyError(sid, available)
        return cls(available[sid] for sid in dict.fromkeys(enabled))

    def add(self, strategy: Strategy) -> None:
        if strategy.id in self._strategies:
            raise ValueError(f"strategy {strategy.id!r} is already registered")
        self._strategies[strategy.id] = strategy
        self.weights.setdefault(strategy.id, 1.0)

    def get(self, strategy_id: str) -> Strategy:
        try:
            return self._strategies[strategy_id]
        except KeyError:
            raise UnknownStrategyError(strategy_id, self._strategies) from None

    def __contains__(self, strategy_id: object) -> bool:
        return strategy_id in self._strategies

    def __iter__(self) -> Iterator[Strategy]:
        return iter(self._strategies.values())

    def __len__(self) -> int:
        return len(self._strategies)

    @property
    def ids(self) -> list[str]:
        return list(self._strategies)

    def weight(self, strategy_id: str) -> float:
        return self.weights.get(strategy_id, 1.0)

    def max_risk_percent(self, strategy_id: str) -> float | None:
        """The strategy's own ``maxRiskPercent`` (None for code strategies)."""
        return self.get(strategy_id).max_risk_percent

    def generate(
        self,
        series: BarSeries,
        events: Iterable[Event],
        *,
        as_of: date | None = None,
        lookback: int = 1,
    ) -> list[TradeSetup]:
        """Setups of every strategy for the last ``lookback`` sessions ending at ``as_of``.

        Confidence is multiplied by the strategy's weight and capped to [0, 1]. Sorted by session,
        then strategy id.
        """
        events = list(events)
        out: list[TradeSetup] = []
        indicators = IndicatorCache()
        for strategy in self._strategies.values():
            if isinstance(strategy, IndicatorStrategy):
                setups = strategy.generate(
                    series, events, as_of=as_of, lookback=lookback, indicators=indicators
                )
            else:
                setups = strategy.generate(series, events, as_of=as_of, lookback=lookback)
            for setup in setups:
                out.append(self.shape(setup))
        out.sort(key=lambda t: (t.time is None, t.time, t.strategy_id))
        return out

    def shape(self, setup: TradeSetup) -> TradeSetup:
        """A strategy's raw setup with its weight applied to the confidence (capped to [0, 1]) and, when
        beliefs set the weight, a note citing them. The same object at weight 1 with no note."""
        sid = setup.strategy_id
        w = self.weight(sid)
        if w != 1.0:
            confidence = round(min(1.0, max(0.0, setup.confidence * w)), 4)
            setup = setup.model_copy(update={"confidence": confidence})
        if sid in self.influence:
            note = f"beliefs: {self.influence[sid]}"
            setup = setup.model_copy(update={"notes": f"{setup.notes}; {note}" if setup.notes else note})
        return setup

    def admit(self, setup: TradeSetup, risk: RiskResult) -> RiskResult:
        """``risk`` unchanged, unless the setup's strategy is suspended by its beliefs: then a rejected
        candidate (``STRATEGY_SUSPENDED``, size 0) that is stored and settled but never allocated."""
        reason = self.suspended.get(setup.strategy_id)
        if reason is None:
            return risk
        from jax_assistant.risk.protections import ViolationCode, violation

        message = f"strategy {setup.strategy_id} suspended: {reason}"
        found = violation(ViolationCode.STRATEGY_SUSPENDED, message, limit=0, actual=0)
        constraints = risk.constraints.model_copy(
            update={
                "allowed": False,
                # A candidate's reason only says it awaits allocation: the suspension is the reason now.
                "reason": found.message if risk.constraints.allowed else risk.constraints.reason,
                "violations": [*risk.constraints.violations, found],
            }
        )
        return risk.model_copy(update={"constraints": constraints, "position_size": 0, "total_risk": 0.0})
