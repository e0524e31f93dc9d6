"""The composition root: builds providers, services, storage and the engine from Settings, and runs,
resumes or retries runs. The CLI (and later the HTTP API) are thin shells over this.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jax_assistant.config import Settings, setting_source
from jax_assistant.domain import Event, Run, RunStatus, SymbolResult, SymbolStatus, TradeRecord, utc_now
from jax_assistant.domain.errors import ConfigError, InputError, UnavailableError
from jax_assistant.engines.local import LocalEngine, ProgressSink, StartPoint, fresh_starts
from jax_assistant.engines.writer import GroupCommitWriter
from jax_assistant.learning.service import LearningPin, feed_run
from jax_assistant.marketdata import create_provider
from jax_assistant.marketdata.base import DataSourceError, MarketDataProvider
from jax_assistant.marketdata.settings import LIVE_PROVIDERS
from jax_assistant.observability.correlation import new_correlation_id
from jax_assistant.observability.entropy import random_bytes
from jax_assistant.observability.logging import get_logger
from jax_assistant.observability.metrics import MetricsSink, NullMetrics, PipelineMetrics
from jax_assistant.pipeline import plugins
from jax_assistant.pipeline.base import Stage, WorkItem
from jax_assistant.pipeline.fetch_stage import with_fetch_stage
from jax_assistant.pipeline.plugins import StageFactory, build_pipeline
from jax_assistant.pipeline.resilience import Clock, ResilienceRegistry
from jax_assistant.pipeline.services import Services
from jax_assistant.research.service import ResearchService
from jax_assistant.risk import RiskConstraints, RiskManager, load_risk_constraints
from jax_assistant.risk.portfolio import PortfolioBook, PortfolioState
from jax_assistant.storage import Database, Repository, open_database
from jax_assistant.storage.repository import AuditWrite
from jax_assistant.strategies.registry import StrategyRegistry

if TYPE_CHECKING:
    from jax_assistant.memory.facade import Memory
    from jax_assistant.memory.outbox import MemoryOutbox

log = get_logger("jax_assistant.orchestrator")


class RunError(InputError):
    """The run could not start (bad input, unknown run, unreadable data). Message is user-facing."""


class RunLeasedError(RunError):
    """Another live process holds the run's lease (it is executing the run): resume nothing here."""


def new_owner_id() -> str:
    """Who holds a lease: host and pid for a human reading the row, plus a random part so two
    orchestrators in one process (tests, an embedding app) never mistake each other's lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def new_run_id(now: datetime | None = None) -> str:
    now = now or utc_now()
    # 48 random bits per second of timestamp: a burst of 10 000 ids in one second collides with
    # probability ~2e-7, and record_run refuses an id that exists, so two runs never share rows.
    # (Short enough for `jax runs list` to fit 80 columns.)
    # (Pooled bytes: os.urandom on the event loop thread can wait out another thread's GIL turn.)
    return f"run_{now:%Y%m%dT%H%M%S}_{random_bytes(6).hex()}"


@dataclass
class RunRequest:
    symbols: Sequence[str] = ()
    as_of: date | None = None
    lookback: int | None = None
    correlation_id: str | None = None
    stage_overrides: dict[str, dict[str, Any]] | None = None
    run_id: str | None = None  # lets a caller (the HTTP API) hand out the id before the run starts
    skip_unknown: bool = False  # run the known symbols of a request that also names unknown ones
    # Per-run inputs on par with `jax run`'s flags (None = the configured value).
    account_size: float | None = None
    risk_percent: float | None = None
    data_source: str | None = None  # a name from settings.data_sources, never a raw path
    detectors: dict[str, Any] | None = None  # partial DetectorConfig, e.g. {"gap_threshold_pct": 2}
    # Events pushed in by jax-ingest; detect_events merges those of the scanned sessions.
    pushed_events: Sequence[Event] = ()


@dataclass
class PreparedRun:
    """A validated run, not yet recorded or started (see Orchestrator.prepare_run)."""

    run: Run
    provider: MarketDataProvider
    stages: list[Stage] | None  # None: built when it executes (the pipeline was validated before)
    unknown: list[str]


@dataclass
class RunOutcome:
    run: Run
    results: list[SymbolResult]
    unknown_symbols: list[str]


def _keep_pushed(run: Run, events: Sequence[Event]) -> None:
    """Record the pushed events of the run's symbols in its params (so a resume sees them too), in a
    fixed order; those dated after the run's as-of date are never used for it, only named."""
    assert run.as_of is not None
    mine = sorted(
        (e for e in events if e.symbol in run.symbols), key=lambda e: (e.symbol, e.time, e.type, e.id)
    )
    kept = [e for e in mine if e.session <= run.as_of]
    run.params["pushedEvents"] = [e.model_dump(mode="json", by_alias=True) for e in kept]
    late = [e.id for e in mine if e.session > run.as_of]
    if late:
        run.params["pushedEventsAfterAsOf"] = late


def pushed_events_of(run: Run, symbol: str) -> list[Event]:
    return [Event.model_validate(e) for e in run.params.get("pushedEvents", ()) if e.get("symbol") == symbol]


class Orchestrator:
    """Owns the storage connection and the per-run engines. Use ``async with Orchestrator(settings)``."""

    def __init__(
        self, settings: Settings, *, metrics: MetricsSink | None = None, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.metrics: MetricsSink = metrics or (
            PipelineMetrics() if settings.metrics_enabled else NullMetrics()
        )
        self.clock = clock
        self.db: Database | None = None
        self.repository: Repository | None = None
        # Breakers and limiters outlive a single run: a dependency that is down stays known to be down.
        self.resilience = ResilienceRegistry(settings.resilience, clock)
        self.resilience.on_breaker_state_change.append(
            lambda name, _old, new: self.metrics.set_breaker_state(name, new.value)
        )
        self._providers: dict[tuple[str, str | None], MarketDataProvider] = {}
        self.engine: LocalEngine | None = None  # the most recent engine (the CLI's Ctrl-C target)
        self.active: dict[str, LocalEngine] = {}  # run id -> engine, while the run is in progress
        self.owner_id = new_owner_id()  # the lease owner for every run this orchestrator executes
        # Stage discovery, once: entry_points() reads every installed distribution's metadata (~10 ms,
        # which every HTTP run request paid). A plugin installed later needs a restart, as any code does.
        self._stage_factories: dict[str, StageFactory] | None = None
        # The configured pipeline's stage names once it built without error: a request without stage
        # overrides is then validated with no stage built (0.6 ms of every HTTP accept); its stages
        # are built where it executes.
        self._validated_pipeline: list[str] | None = None
        self._bundled_strategies: StrategyRegistry | None = None  # for services(validating=True)
        self._bundled_constraints: RiskConstraints | None = None  # likewise
        self.memory: Memory | None = None
        self.memory_outbox: MemoryOutbox | None = None
        self._research: ResearchService | None = None  # built on first use with the open database
        # Compaction of a completed run goes on in the background (awaited by close()) instead of
        # before the run's outcome is returned. For `jax run`, which prints its report meanwhile: at
        # lookback 60 compaction rewrites ~48 MB of checkpoint rows on the writer thread (0.06 s with
        # secure_delete FAST, 0.2-0.4 s where a build zeroes freed pages) while the report (~0.2 s)
        # renders on the loop. Off elsewhere: a caller may read the checkpoints right after the run
        # returns.
        self.background_compaction = False
        self._housekeeping: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Orchestrator:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self.db is None:
            try:
                _check_sqlite_folder(self.settings.database_url)
                self.db = await open_database(self.settings.database_url)
            except ConfigError:
                raise
            except Exception as exc:
                raise _database_error(self.settings.database_url, exc) from exc
            self.repository = Repository(self.db)
            await self._open_memory()

    async def _open_memory(self) -> None:
        """memsvc: the memory client, once per orchestrator (so once per `jax run`), for the memory stages."""
        from jax_assistant.pipeline.memory_stages import MEMORY_STAGES

        if self.memory is None and self.db is not None and set(MEMORY_STAGES) & set(self.settings.pipeline):
            from jax_assistant.memory.facade import open_memory
            from jax_assistant.memory.outbox import MemoryOutbox

            self.memory = await open_memory(self.settings, database=self.db)
            self.memory_outbox = MemoryOutbox(self.db)

    async def close(self) -> None:
        while self._housekeeping:  # compaction of completed runs (background_compaction)
            await asyncio.gather(*self._housekeeping, return_exceptions=True)
        for provider in self._providers.values():
            if (closer := getattr(provider, "aclose", None)) is not None:  # live vendors' HTTP clients
                await closer()
        if self.memory is not None:
            with contextlib.suppress(Exception):  # a client that cannot close cleanly must not block
                await self.memory.close()
            self.memory = None
            self.memory_outbox = None
        if self._research is not None:
            await self._research.aclose()
            self._research = None
        if self.db is not None:
            await self.db.close()
            self.db = None
            self.repository = None

    # ------------------------------------------------------------------ building blocks

    def provider(self, kind: str | None = None, data_path: str | None = None) -> MarketDataProvider:
        kind = kind or self.settings.provider
        path = data_path or (str(self.settings.data_path) if self.settings.data_path else None)
        key = (kind, path)
        if key not in self._providers and kind in LIVE_PROVIDERS:  # vendors + bar cache (docs/marketdata.md)
            from jax_assistant.marketdata.providers import build_live_provider  # httpx: only when used

            self._providers[key] = build_live_provider(
                self.settings, self.resilience, lambda: self.db, kind=kind
            )
        if key not in self._providers:
            with _reading_data(path or kind):
                provider = create_provider(
                    kind,
                    Path(path) if path else None,
                    earnings_path=self.settings.earnings_path,
                    sectors_path=self.settings.sectors_path,
                )
                provider.symbols()  # loads the data: a source that cannot be read fails here, by name
            self._providers[key] = provider
        return self._providers[key]

    def stages(
        self, overrides: dict[str, dict[str, Any]] | None = None, names: Sequence[str] | None = None
    ) -> list[Stage]:
        """The pipeline ``names`` (default: the configured one) with config and per-run policy overrides.

        An override naming a stage outside the pipeline is refused, not ignored: a typo such as
        ``persit.timeout_s`` would otherwise run with the default policy. Raises ConfigError for the
        config's ``[stages.X]``, InputError for a run's overrides, PipelineConfigError for bad values.
        """
        pipeline = with_fetch_stage(list(names or self.settings.pipeline), self.settings.provider)
        configurable = set(pipeline) | set(self.settings.pipeline)
        for name in self.settings.stages:
            if name not in configurable:
                where, file = setting_source(("stages", name))
                raise ConfigError(
                    f"{where}: not a stage of the pipeline ({', '.join(self.settings.pipeline)})",
                    file=file,
                    key=f"stages.{name}",
                )
        for name in overrides or {}:
            if name not in pipeline:
                raise InputError(
                    f"stage override {name!r}: not a stage of the pipeline ({', '.join(pipeline)})",
                    field=f"stageOverrides.{name}",
                    rule="pipeline_stage",
                )
        merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in self.settings.stages.items()}
        for name, over in (overrides or {}).items():
            base = merged.get(name, {})
            merged[name] = {**base, **over}
            if isinstance(base.get("retry"), dict) and isinstance(over.get("retry"), dict):
                # As StagePolicy.merged does: a run's partial retry policy keeps the configured rest.
                merged[name]["retry"] = {**base["retry"], **over["retry"]}
        if self._stage_factories is None:
            self._stage_factories = plugins.discover_stage_factories()
        return build_pipeline(pipeline, overrides=merged, factories=self._stage_factories)

    def services(self, provider: MarketDataProvider, run: Run, *, validating: bool = False) -> Services:
        """What a run's stages use. ``validating``: built only to check the run's files, then dropped
        (prepare_run), so the bundled strategies, which cannot change while the process runs, are
        parsed once instead of on every request."""
        params = run.params
        state = (
            PortfolioState.load(self.settings.portfolio_path)
            if self.settings.portfolio_path
            else PortfolioState(account_size=params["accountSize"], equity=params["accountSize"])
        )
        book = PortfolioBook(state, copy=False)  # a state just loaded or built: the book's own
        # A portfolio file's account size is the sizing base, as its equity is the leverage base.
        if validating and self.settings.risk_constraints_path is None:
            # The bundled constraints cannot change either: parsed once (about 15 % of an accept's CPU).
            if self._bundled_constraints is None:
                self._bundled_constraints = load_risk_constraints(None)
            constraints = self._bundled_constraints
        else:
            constraints = load_risk_constraints(self.settings.risk_constraints_path)
        risk = RiskManager(
            constraints,
            book,
            account_size=state.account_size,
            risk_percent=params["riskPercent"],
        )
        if validating and self.settings.strategies_dir is None:
            if self._bundled_strategies is None:
                self._bundled_strategies = StrategyRegistry.default(None, self.settings.strategies)
            strategies = self._bundled_strategies  # never used by a run: each run builds its own
        else:
            strategies = StrategyRegistry.default(self.settings.strategies_dir, self.settings.strategies)
        detectors = self.settings.detectors
        if params.get("detectors"):
            detectors = type(detectors).model_validate({**detectors.model_dump(), **params["detectors"]})
        return Services(
            provider=provider,
            detectors=detectors,
            strategies=strategies,
            risk=risk,
            repository=self.repository,
            memory=self.memory,
            memory_outbox=self.memory_outbox,
            research=self.research_service(),
        )

    def research_service(self) -> ResearchService:
        """The research providers, cache and budget; one per open database (breakers outlive runs)."""
        if self._research is None or (self.db is not None and self._research.store is None):
            self._research = ResearchService.from_settings(
                self.settings.research, resilience=self.resilience, db=self.db, metrics=self.metrics
            )
        return self._research

    def _engine(self, stages: list[Stage], services: Services) -> LocalEngine:
        eng = self.settings.engine
        # One writer per run, shared by the engine's bookkeeping and the stages' records.
        writer = GroupCommitWriter(self.repository) if self.repository is not None else None
        services.storage = writer
        self.engine = LocalEngine(
            stages,
            services,
            repository=self.repository,
            resilience=self.resilience,
            metrics=self.metrics,
            concurrency=eng.concurrency,
            queue_size=eng.queue_size,
            drain_timeout_s=eng.drain_timeout_s,
            clock=self.clock,
            writer=writer,
        )
        return self.engine

    async def _run_engine(
        self,
        engine: LocalEngine,
        run: Run,
        starts: list[StartPoint],
        progress: ProgressSink | None,
        finished: dict[str, SymbolResult] | None = None,
        before_end: Callable[[list[SymbolResult]], Awaitable[None]] | None = None,
    ) -> tuple[Run, list[SymbolResult]]:
        """Execute with the run's lease held (the caller took it) and heartbeated; released at the end
        however the run ends, so a run left ``running`` (shutdown) is resumable at once."""
        self.active[run.id] = engine
        heartbeat = asyncio.create_task(self.heartbeat(run.id, engine.cancel), name=f"jax-lease-{run.id}")
        try:
            run, results = await engine.run(
                run, starts, progress=progress, finished=finished, before_end=before_end
            )
        finally:
            self.active.pop(run.id, None)
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if self.repository is not None:
                with contextlib.suppress(Exception):  # storage down: the lease simply expires
                    await self.repository.release_lease(run.id, self.owner_id)
        # After the lease is released (a completed run is never resumed): a background compaction
        # must not hold up the release queued behind it on the one writer.
        if run.status is RunStatus.COMPLETED and self.settings.storage.compact_completed:
            if self.background_compaction:
                task = asyncio.create_task(self._compact(run.id), name=f"jax-compact-{run.id}")
                self._housekeeping.add(task)
                task.add_done_callback(self._housekeeping.discard)
                await asyncio.sleep(0)  # started: its write is queued before the caller goes on
            else:
                await self._compact(run.id)
        return run, results

    async def heartbeat(self, run_id: str, on_lost: Callable[[], object]) -> None:
        """Keep this process's lease on run ``run_id`` alive until cancelled; if another process took
        it over (ours expired while this process stalled), call ``on_lost`` once and return. Used while
        a run executes and while it waits in the admission queue, so a queued run is never taken for
        an interrupted one."""
        cfg = self.settings.storage
        while self.repository is not None:
            await asyncio.sleep(cfg.heartbeat_s)
            try:
                held = await self.repository.renew_lease(run_id, self.owner_id, cfg.lease_ttl_s)
            except Exception:
                log.warning("lease heartbeat failed; retrying", run_id=run_id, exc_info=True)
                continue
            if not held:
                # Someone took the run over after our lease expired (this process stalled): stop, so
                # the run is never executed by two processes at once.
                log.error("lost the run's lease; cancelling", run_id=run_id, owner=self.owner_id)
                on_lost()
                return

    async def _compact(self, run_id: str) -> None:
        assert self.repository is not None
        try:
            compacted = await self.repository.compact_run(run_id)
            log.info("compacted checkpoints of completed run", run_id=run_id, checkpoints=compacted)
        except Exception:  # a run's outcome never depends on housekeeping
            log.warning("could not compact the run's checkpoints", run_id=run_id, exc_info=True)

    async def claim_run(self, run_id: str) -> bool:
        """Take the lease of run ``run_id`` (atomic compare-and-set); False if a live process holds it."""
        await self.open()
        assert self.repository is not None
        return await self.repository.acquire_lease(run_id, self.owner_id, self.settings.storage.lease_ttl_s)

    def status(self) -> dict[str, Any]:
        """Flow-control and dependency state for /status: queue depth, in-flight, breakers, limiters."""
        runs = {run_id: e.status.as_dict() for run_id, e in self.active.items()}
        return {
            "activeRuns": runs,
            "queueDepth": sum(r["queueDepth"] for r in runs.values()),
            "inFlight": sum(r["inFlight"] for r in runs.values()),
            "resilience": self.resilience.snapshot(),
        }

    async def resume_interrupted(self, *, limit: int = 1000) -> list[RunOutcome]:
        """Resume every interrupted run whose lease this process wins, one after another.

        Any number of processes may call this at once: each run's lease goes to exactly one of them.
        """
        outcomes = []
        for run in await self.interrupted_runs(limit=limit):
            try:
                outcomes.append(await self.resume_run(run.id))
            except RunLeasedError:
                continue  # another process won it between the scan and our claim
        return outcomes

    async def interrupted_runs(self, *, limit: int = 1000) -> list[Run]:
        """Runs left ``running`` whose lease expired (their executor died), oldest first."""
        await self.open()
        assert self.repository is not None
        return await self.repository.list_interrupted_runs(limit=limit)

    # ------------------------------------------------------------------ resolving input

    def resolve_symbols(
        self, provider: MarketDataProvider, requested: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        """(known symbols in request order, unknown ones). Empty request = watchlist, else every symbol."""
        available = provider.symbols()
        if not requested:
            requested = self.settings.watchlist or available
        known_set = set(available)
        seen: set[str] = set()
        known: list[str] = []
        unknown: list[str] = []
        for raw in requested:
            sym = raw.strip().upper()
            if not sym or sym in seen:
                continue
            seen.add(sym)
            # A live provider's universe is open: its vendors say what exists (in the fetch stage).
            (known if sym in known_set or getattr(provider, "open_universe", False) else unknown).append(sym)
        return known, unknown

    @staticmethod
    def resolve_as_of(provider: MarketDataProvider, as_of: date | None) -> date:
        latest = provider.latest_date()
        if as_of is None:
            return latest
        if as_of > latest:
            raise RunError(
                f"--as-of {as_of.isoformat()} is after the last session in the data ({latest.isoformat()})"
            )
        return as_of

    # ------------------------------------------------------------------ runs

    def prepare_run(self, request: RunRequest) -> PreparedRun:
        """Validate ``request`` and build its Run, without touching storage or starting anything.

        Everything a run needs is checked here, so a request that cannot start leaves no run row:
        the data source, symbols, date, numbers, stage overrides, and the strategy, constraints and
        portfolio files. Raises a JaxError family: InputError (RunError: unknown symbols unless
        ``skip_unknown``, bad date, bad overrides), ConfigError (files, settings, pipeline), DataError.
        """
        provider = self.request_provider(request)
        symbols, unknown = self.resolve_symbols(provider, request.symbols)
        if unknown and (not symbols or not request.skip_unknown):
            raise RunError(_unknown_message(unknown, provider), field="symbols", rule="known_symbol")
        if not symbols:
            raise RunError("no symbols to run", field="symbols")
        as_of = self.resolve_as_of(provider, request.as_of)
        lookback = request.lookback or self.settings.lookback
        if not 1 <= lookback <= 10_000:
            raise InputError(f"lookback {lookback}: must be between 1 and 10000", field="lookback")
        stages: list[Stage] | None = None
        if request.stage_overrides or self._validated_pipeline is None:
            stages = self.stages(request.stage_overrides)
            names = [s.name for s in stages]
            if not request.stage_overrides:
                self._validated_pipeline = names
        else:
            names = list(self._validated_pipeline)
        run = Run(
            id=request.run_id or new_run_id(),
            correlation_id=request.correlation_id or new_correlation_id(),
            as_of=as_of,
            provider=provider.name,
            simulated=provider.simulated,
            symbols=symbols,
            pipeline=names,
            params={
                "accountSize": request.account_size or self.settings.account_size,
                "riskPercent": request.risk_percent or self.settings.risk_percent,
                "lookback": lookback,
                "provider": provider.name,
                "dataPath": self._data_path(request),
                "stageOverrides": request.stage_overrides or {},
                "unknownSymbols": unknown,
            },
        )
        if request.data_source is not None:
            run.params["dataSource"] = request.data_source
        if request.detectors:
            run.params["detectors"] = dict(request.detectors)
        if request.pushed_events:
            _keep_pushed(run, request.pushed_events)
        # Built once here only to validate them (strategy, constraints and portfolio files); execute
        # builds the run's own, bound to the open repository. A portfolio file's account size is the
        # sizing base, so it is the account the run records (reports compute "% of account" from it).
        run.params["accountSize"] = self.services(provider, run, validating=True).risk.account_size
        return PreparedRun(run=run, provider=provider, stages=stages, unknown=unknown)

    async def record_run(
        self,
        prepared: PreparedRun,
        *,
        audit: AuditWrite | None = None,
        run_json: dict[str, Any] | None = None,
    ) -> bool:
        """Write the run's row, leased to this process: from here on a crash leaves a run whose lease
        expires and that start-up (or `jax run --resume`) then resumes.

        With ``audit`` (the record of the run's acceptance) both rows go in one transaction, and
        False means nothing was written: ``audit``'s idempotency key was already recorded.
        ``run_json``: ``prepared.run.model_dump(mode="json")`` if the caller needs it too (made once).
        """
        await self.open()
        assert self.repository is not None
        owner, ttl = self.owner_id, self.settings.storage.lease_ttl_s
        if audit is None:
            created: bool | None = await self.repository.create_run(
                prepared.run, lease_owner=owner, lease_ttl_s=ttl, run_json=run_json
            )
        else:
            created = await self.repository.create_run_audited(
                prepared.run, audit, lease_owner=owner, lease_ttl_s=ttl, run_json=run_json
            )
            if created is None:
                return False
        if not created:  # never execute into another run's rows
            raise RunError(f"run id {prepared.run.id!r} already exists", field="runId", rule="unique")
        return True

    def request_provider(self, request: RunRequest) -> MarketDataProvider:
        """The provider a request runs on: its named data source, else the configured one."""
        if request.data_source is None:
            return self.provider()
        source = self.settings.data_sources.get(request.data_source)
        if source is None:
            names = ", ".join(sorted(self.settings.data_sources)) or "none configured"
            raise InputError(
                f"dataSource {request.data_source!r}: not a configured data source ({names})",
                field="dataSource",
                rule="configured_name",
            )
        return self.provider(source.provider, str(source.path) if source.path else None)

    def _data_path(self, request: RunRequest) -> str | None:
        if request.data_source is not None:
            path = self.settings.data_sources[request.data_source].path
        else:
            path = self.settings.data_path
        return str(path) if path else None

    async def execute(
        self, prepared: PreparedRun, *, progress: ProgressSink | None = None, record: bool = True
    ) -> RunOutcome:
        """Run a prepared run (recording it first unless the caller already did)."""
        if record:
            await self.record_run(prepared)
        run = prepared.run
        assert run.as_of is not None
        services = self.services(prepared.provider, run)
        pin = await feed_run(self.repository, services, run.as_of)  # beliefs and realised outcomes, if any
        if not pin.is_empty() and self.repository is not None:
            # Pinned so a resume decides with what this start saw (learning/service.LearningPin).
            run.params["learning"] = pin.model_dump(mode="json", by_alias=True)
            await self.repository.update_run(run)
        stages = prepared.stages
        if stages is None:
            stages = self.stages(run.params.get("stageOverrides") or None, run.pipeline)
        engine = self._engine(stages, services)
        starts = fresh_starts(run, run.symbols, run.as_of, int(run.params["lookback"]))
        for start in starts:
            start.item.pushed_events = pushed_events_of(run, start.item.symbol)
        run, results = await self._run_engine(engine, run, starts, progress)
        return RunOutcome(run, results, prepared.unknown)

    async def start_run(self, request: RunRequest, *, progress: ProgressSink | None = None) -> RunOutcome:
        return await self.execute(self.prepare_run(request), progress=progress)

    async def resume_run(self, run_id: str, *, progress: ProgressSink | None = None) -> RunOutcome:
        """Continue a run from the last completed stage of each unfinished symbol."""
        await self.open()
        assert self.repository is not None
        run = await self.repository.get_run(run_id)
        if run is None:
            raise RunError(f"no run {run_id!r} (see `jax runs list`)")
        if run.status is RunStatus.COMPLETED:
            return RunOutcome(run, await self.repository.get_symbol_results(run_id), [])
        if not await self.claim_run(run_id):
            owner, expires = await self.repository.lease_of(run_id)
            until = expires.isoformat(timespec="seconds") if expires else "?"
            raise RunLeasedError(
                f"run {run_id!r} is being executed by another process ({owner}, lease until {until});"
                " it can be resumed once that lease expires"
            )
        provider = self.provider(run.params.get("provider"), run.params.get("dataPath"))
        stages = self.stages(run.params.get("stageOverrides"), run.pipeline)
        done_results = {
            r.symbol: r
            for r in await self.repository.get_symbol_results(run_id)
            if r.status in (SymbolStatus.SUCCEEDED, SymbolStatus.DEGRADED, SymbolStatus.FAILED)
        }
        checkpoints = await self.repository.load_checkpoints(run_id)
        assert run.as_of is not None
        starts: list[StartPoint] = []
        booked: list[TradeRecord] = [t for r in done_results.values() for t in r.trades]
        for symbol in run.symbols:
            if symbol in done_results:
                continue
            start = StartPoint(
                item=WorkItem(
                    run_id=run.id,
                    symbol=symbol,
                    as_of=run.as_of,
                    lookback=int(run.params.get("lookback", 1)),
                    correlation_id=run.correlation_id,
                    pushed_events=pushed_events_of(run, symbol),
                )
            )
            completed = [
                row
                for row in checkpoints.get(symbol, [])
                if row.stage in row.item.get("completed_stages", [])
            ]
            if completed:
                last = completed[-1]
                item = WorkItem.model_validate(last.item)
                start = StartPoint(
                    item=item, next_stage=last.seq + 1, stages=[row.result for row in completed]
                )
                booked.extend(item.trades)
            starts.append(start)
        run.status = RunStatus.RUNNING
        run.finished_at = None
        await self.repository.update_run(run)
        services = self.services(provider, run)
        pin = LearningPin.model_validate(run.params.get("learning") or {})
        await feed_run(self.repository, services, run.as_of, pin=pin)
        # The book must see what this run already reserved, or a resumed run could over-allocate.
        services.risk.book.restore([t for t in booked if t.risk.allowed], sector_of=provider.sector)
        engine = self._engine(stages, services)
        run, results = await self._run_engine(engine, run, starts, progress, finished=done_results)
        return RunOutcome(run, results, [])

    async def _booked_trades(self, run: Run) -> list[TradeRecord]:
        """Allowed trades of ``run`` and of every run it retried, following the ``retryOf`` chain."""
        assert self.repository is not None
        booked: list[TradeRecord] = []
        seen: set[str] = set()
        current: Run | None = run
        while current is not None and current.id not in seen:
            seen.add(current.id)
            booked.extend(_allowed(await self.repository.get_symbol_results(current.id)))
            parent = current.params.get("retryOf")
            current = await self.repository.get_run(parent) if parent else None
        # Retry runs of the same origin are found from the origin's letters' retried_by links.
        for letter in await self.repository.list_dead_letters(run_id=run.id, status=None):
            if letter.retried_by_run_id and letter.retried_by_run_id not in seen:
                seen.add(letter.retried_by_run_id)
                booked.extend(_allowed(await self.repository.get_symbol_results(letter.retried_by_run_id)))
        return booked

    async def retry_dead_letters(
        self,
        ids: Sequence[int] = (),
        *,
        run_id: str | None = None,
        progress: ProgressSink | None = None,
        new_id: str | None = None,
    ) -> RunOutcome:
        """Re-run dead-lettered symbols in a new run (id ``new_id``, else a fresh one), each from the
        stage that failed."""
        await self.open()
        assert self.repository is not None
        letters = [d for i in ids if (d := await self.repository.get_dead_letter(i)) is not None]
        missing = [i for i in ids if i not in {d.id for d in letters}]
        if missing:
            raise RunError(f"no dead letter(s) {', '.join(map(str, missing))} (see `jax dlq list`)")
        if run_id is not None:
            letters.extend(await self.repository.list_dead_letters(run_id=run_id, status="open"))
        # One start per letter, even when it is named by id and again through its run.
        letters = list({d.id: d for d in letters if d.status == "open"}.values())
        if not letters:
            raise RunError("no open dead letters to retry")
        origin = await self.repository.get_run(letters[0].run_id)
        if origin is None:
            raise RunError(f"the run {letters[0].run_id!r} of the dead letter is gone")
        if any(d.run_id != origin.id for d in letters):
            raise RunError("retry dead letters of one run at a time (use --run RUN_ID)")
        provider = self.provider(origin.params.get("provider"), origin.params.get("dataPath"))
        stages = self.stages(origin.params.get("stageOverrides"), origin.pipeline)
        names = [s.name for s in stages]
        run = Run(
            id=new_id or new_run_id(),
            correlation_id=origin.correlation_id,
            as_of=origin.as_of,
            provider=origin.provider,
            simulated=origin.simulated,
            symbols=[d.symbol for d in letters],
            pipeline=names,
            params={**origin.params, "retryOf": origin.id, "deadLetters": [d.id for d in letters]},
        )
        await self.repository.create_run(
            run, lease_owner=self.owner_id, lease_ttl_s=self.settings.storage.lease_ttl_s
        )
        starts = []
        for d in letters:
            item = WorkItem.model_validate(d.item).model_copy(update={"run_id": run.id})
            next_stage = names.index(d.stage) if d.stage in names else len(item.completed_stages)
            starts.append(StartPoint(item=item, next_stage=next_stage))
        services = self.services(provider, run)
        # The retry shares the original run's portfolio: what that run (and earlier retries of it)
        # already allowed still takes room, or retried symbols could exceed the portfolio limits.
        services.risk.book.restore(await self._booked_trades(origin), sector_of=provider.sector)
        repository = self.repository

        async def settle(results: list[SymbolResult]) -> None:
            # Before the retry run is stored as ended: whoever sees it ended sees its letters settled.
            by_symbol = {r.symbol: r for r in results}
            for d in letters:
                ok = by_symbol[d.symbol].status in (SymbolStatus.SUCCEEDED, SymbolStatus.DEGRADED)
                await repository.mark_dead_letter(
                    d.id, "resolved" if ok else "retried", retried_by_run_id=run.id
                )

        engine = self._engine(stages, services)
        run, results = await self._run_engine(engine, run, starts, progress, before_end=settle)
        return RunOutcome(run, results, [])


@contextmanager
def _reading_data(source: str) -> Iterator[None]:
    """Low-level read failures of the data source (a truncated gzip, a file that vanished) become one
    DataSourceError naming the file, instead of a bare "unexpected end of file"."""
    try:
        yield
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DataSourceError(f"cannot read market data {source}: {detail}") from exc


def _check_sqlite_folder(url: str | None) -> None:
    """Refuse a SQLite file in a folder that does not exist before the driver tries (and fails in
    its own thread); the default location is created by the storage layer."""
    if not url:
        return
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database or ""
    if (
        parsed.drivername.startswith("sqlite")
        and name
        and name != ":memory:"
        and not name.startswith("file:")
    ):
        folder = Path(name).parent
        if not folder.is_dir():
            raise ConfigError(
                f"cannot open the SQLite database {url}: the folder {folder} does not exist",
                key="database_url",
            )


def _database_error(url: str | None, exc: Exception) -> Exception:
    """A failure to open the database as a JaxError naming the database (never its password)."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from jax_assistant.storage.db import mask_url, resolve_database_url

    if isinstance(exc, ArgumentError | ValueError):
        shown = url or "the database URL"
        return ConfigError(f"database URL {shown!r}: {exc}", key="database_url")
    try:
        resolved = resolve_database_url(url)
        shown = mask_url(resolved)
        name = resolved.rsplit("/", 1)[-1].split("?", 1)[0]
    except Exception:
        shown, name = str(url), ""
    if isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == "3D000":
        return ConfigError(
            f"database {name!r} does not exist on {shown}: create it with `createdb {name}` "
            "(same host and user), or `jax db init`",
            key="database_url",
        )
    if isinstance(exc, DBAPIError) and shown.startswith("sqlite"):
        # A local file that cannot be opened is a wrong path or permission, not an outage.
        return ConfigError(
            f"cannot open the SQLite database {shown}: {exc.orig} "
            "(does its folder exist and is it writable?)",
            key="database_url",
        )
    if isinstance(exc, OSError | DBAPIError | TimeoutError):
        detail = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
        return UnavailableError(f"cannot open the database {shown}: {detail.splitlines()[0]}")
    return exc


def _allowed(results: Sequence[SymbolResult]) -> list[TradeRecord]:
    return [t for r in results for t in r.trades if t.risk.allowed]


# Suggestions cost a difflib scan of every known symbol each: 5 000 unknown symbols took 6 s. Only the
# first few get one, and the message names at most _UNKNOWN_SHOWN of them.
_UNKNOWN_SUGGESTED = 5
_UNKNOWN_SHOWN = 20


def _unknown_message(unknown: Sequence[str], provider: MarketDataProvider) -> str:
    import difflib

    available = provider.symbols()
    parts = []
    for i, sym in enumerate(unknown[:_UNKNOWN_SHOWN]):
        close = difflib.get_close_matches(sym, available, n=3) if i < _UNKNOWN_SUGGESTED else []
        parts.append(f"{sym}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    more = f"; and {len(unknown) - _UNKNOWN_SHOWN} more" if len(unknown) > _UNKNOWN_SHOWN else ""
    return f"unknown symbol(s) for the {provider.name} provider: {'; '.join(parts)}{more}"


def unknown_symbols_message(unknown: Sequence[str], provider: MarketDataProvider) -> str:
    return _unknown_message(unknown, provider)
