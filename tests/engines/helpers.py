"""Shared pieces of the engine fault-injection suite: small test stages, services, runs and engines.

Import as ``from tests.engines.helpers import ...`` (pytest runs with ``--import-mode=importlib``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from jax_assistant.analysis.detectors import DetectorConfig
from jax_assistant.domain import Run, SymbolResult, SymbolStatus
from jax_assistant.engines.local import LocalEngine, StartPoint, fresh_starts
from jax_assistant.marketdata import SampleProvider
from jax_assistant.observability.correlation import new_correlation_id
from jax_assistant.pipeline.base import BaseStage, StageContext, StageOutput, WorkItem
from jax_assistant.pipeline.policy import ResilienceConfig, StagePolicy
from jax_assistant.pipeline.resilience import Clock, FakeClock, ResilienceRegistry
from jax_assistant.pipeline.services import Services
from jax_assistant.risk import RiskManager, load_risk_constraints
from jax_assistant.risk.portfolio import PortfolioBook, PortfolioState
from jax_assistant.storage import Repository
from jax_assistant.storage.repository import WriteOp
from jax_assistant.strategies.registry import StrategyRegistry

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
TERMINAL = {SymbolStatus.SUCCEEDED, SymbolStatus.DEGRADED, SymbolStatus.FAILED, SymbolStatus.CANCELLED}
ACCOUNT_SIZE = 10_000.0
RISK_PERCENT = 3.0

Body = Callable[[StageContext, WorkItem], Awaitable[Any]]


class FnStage(BaseStage):
    """A stage whose behaviour is a plain async ``body(ctx, item)``; it counts calls per symbol.

    The body may return a ``StageOutput`` (used as is), a ``WorkItem`` or ``None``; otherwise the
    stage marks the item with ``extras[name] = symbol`` so later assertions can see that it ran.
    """

    def __init__(self, name: str, body: Body | None = None, policy: StagePolicy | None = None) -> None:
        super().__init__(policy or StagePolicy())
        self.name = name  # type: ignore[misc]  # BaseStage declares it as a class variable
        self.body = body
        self.calls: list[str] = []

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:
        self.calls.append(item.symbol)
        out = await self.body(ctx, item) if self.body is not None else None
        if isinstance(out, StageOutput):
            return out
        base = out if isinstance(out, WorkItem) else item
        return StageOutput(item=base.model_copy(update={"extras": {**base.extras, self.name: item.symbol}}))


def policy(**kw: Any) -> StagePolicy:
    """A StagePolicy; ``retry`` may be given as a dict."""
    return StagePolicy.model_validate(kw)


@cache
def sample_provider() -> SampleProvider:
    return SampleProvider()  # ~0.5 s to build; every test shares one (it is read-only)


def make_services(repository: Repository | None = None) -> Services:
    """Services over the bundled simulated market (no files needed) with a fresh portfolio book."""
    provider = sample_provider()
    book = PortfolioBook(PortfolioState(account_size=ACCOUNT_SIZE, equity=ACCOUNT_SIZE))
    risk = RiskManager(
        load_risk_constraints(None), book, account_size=ACCOUNT_SIZE, risk_percent=RISK_PERCENT
    )
    return Services(
        provider=provider,
        detectors=DetectorConfig(),
        strategies=StrategyRegistry.default(None, None),
        risk=risk,
        repository=repository,
    )


def make_run(symbols: Sequence[str], pipeline: Sequence[str] = ()) -> Run:
    """A Run shaped like the orchestrator's (its params let Orchestrator.retry_dead_letters rebuild it)."""
    return Run(
        id=f"run_test_{secrets.token_hex(4)}",
        correlation_id=new_correlation_id(),
        as_of=sample_provider().latest_date(),
        provider="sample",
        simulated=True,
        symbols=list(symbols),
        pipeline=list(pipeline),
        params={
            "accountSize": ACCOUNT_SIZE,
            "riskPercent": RISK_PERCENT,
            "lookback": 1,
            "provider": "sample",
            "dataPath": None,
            "stageOverrides": {},
            "unknownSymbols": [],
        },
    )


def make_engine(
    stages: Sequence[BaseStage],
    *,
    repository: Repository | None = None,
    clock: Clock | None = None,
    config: ResilienceConfig | None = None,
    resilience: ResilienceRegistry | None = None,
    **kw: Any,
) -> LocalEngine:
    clock = clock or FakeClock()
    return LocalEngine(
        stages,
        make_services(repository),
        repository=repository,
        resilience=resilience or ResilienceRegistry(config or ResilienceConfig(), clock),
        clock=clock,
        **kw,
    )


async def start(engine: LocalEngine, symbols: Sequence[str]) -> tuple[Run, list[StartPoint]]:
    """A new run over ``symbols`` (stored if the engine has a repository) and its fresh start points."""
    run = make_run(symbols, [s.name for s in engine.stages])
    if engine.repository is not None:
        assert await engine.repository.create_run(run)
    assert run.as_of is not None
    return run, fresh_starts(run, symbols, run.as_of, 1)


async def run_symbols(engine: LocalEngine, symbols: Sequence[str]) -> tuple[Run, dict[str, SymbolResult]]:
    run, starts = await start(engine, symbols)
    run, results = await engine.run(run, starts)
    return run, by_symbol(results)


def by_symbol(results: Iterable[SymbolResult]) -> dict[str, SymbolResult]:
    out: dict[str, SymbolResult] = {}
    for r in results:
        assert r.symbol not in out, f"{r.symbol} reported twice"
        out[r.symbol] = r
    return out


def stage_of(result: SymbolResult, name: str) -> Any:
    found = [s for s in result.stages if s.stage == name]
    assert len(found) == 1, f"{result.symbol}: {len(found)} results for stage {name!r}"
    return found[0]


def order_independent_constraints(path: Path) -> Path:
    """The bundled risk constraints with the portfolio-level limits opened up, written to ``path``.

    Portfolio limits (positions, sector exposure, portfolio risk) are first come, first served: with
    more than one symbol in flight, which setup books the last slot depends on timing, so two
    uninterrupted runs of the same data can disagree. Per-setup rules stay, so each decision (and
    size) is a pure function of the data and runs can be compared exactly.
    """
    data = json.loads(resources.files("jax_assistant.defaults").joinpath("risk-constraints.json").read_text())
    data["portfolio_constraints"].update(
        max_positions=10_000,
        max_sector_exposure=1_000.0,
        max_correlated_exposure=1_000.0,
        max_portfolio_risk=1_000.0,
    )
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


class BatchRecorder(Repository):
    """Real storage that remembers which ops each committed batch held."""

    def __init__(self, inner: Repository) -> None:
        super().__init__(inner._db)
        self.batches: list[list[WriteOp]] = []

    async def write_batch(self, ops: Sequence[WriteOp]) -> None:
        await super().write_batch(ops)
        self.batches.append(list(ops))
