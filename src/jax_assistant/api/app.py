"""The orchestrator's HTTP service (FastAPI): start runs, follow them live, read what they stored.

A thin shell over :class:`~jax_assistant.orchestrator.Orchestrator`, like the CLI. See ``docs/api.md``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse

from jax_assistant import __version__
from jax_assistant.api.errors import install_error_handlers
from jax_assistant.api.middleware import CorrelationIdMiddleware
from jax_assistant.api.runs import RunManager
from jax_assistant.api.schemas import OrchestrateRequest, ProcessRequest
from jax_assistant.config import Settings
from jax_assistant.domain import Run
from jax_assistant.domain.errors import JaxError
from jax_assistant.learning import service as learning
from jax_assistant.learning.outcomes import with_outcome
from jax_assistant.marketdata.base import MarketDataError
from jax_assistant.observability.correlation import get_correlation_id, new_audit_event
from jax_assistant.observability.logging import get_logger
from jax_assistant.observability.metrics import NullMetrics
from jax_assistant.observability.tracing import configure_tracing, shutdown_tracing, tracing_enabled
from jax_assistant.orchestrator import Orchestrator, RunRequest
from jax_assistant.storage import Repository

SERVICE_NAME = "jax-orchestrator"
# How long shutdown waits for cancelled run tasks to unwind before closing the database.
SHUTDOWN_TIMEOUT_S = 10.0
# engine: how long shutdown lets in-flight stages finish (drain) before cancelling what is left.
SHUTDOWN_DRAIN_S = 5.0

log = get_logger("jax_assistant.api")


async def _drain_active_runs(orch: Orchestrator, timeout_s: float) -> None:
    """Interrupt every active run (a drain that leaves it resumable) and wait up to ``timeout_s``."""
    for engine in list(orch.active.values()):
        engine.interrupt()
    deadline = time.monotonic() + timeout_s
    # Polled: a run leaves `active` once its engine has finished, and nothing signals that.
    while orch.active and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def create_app(
    settings: Settings | None = None,
    *,
    orchestrator: Orchestrator | None = None,
    resume_on_startup: bool = True,
) -> FastAPI:
    """The service. Pass ``orchestrator`` to share one (the caller then owns closing it).

    The lifespan opens storage (running migrations), warms the market-data provider and, with
    ``resume_on_startup``, resumes interrupted runs (``running`` with an expired lease). Shutdown
    drains runs still executing (in-flight stages finish, up to SHUTDOWN_DRAIN_S) then cancels what is
    left; they stay ``running``, checkpointed, with their lease released, and the next start-up (of any
    service on the database) resumes them.

    When the server sets ``app.state.serving`` (an ``asyncio.Event``; `jax serve` does, once its port
    is bound), the resume waits for it: a service that cannot bind its port touches no run.
    """
    owns_orchestrator = orchestrator is None
    orch = orchestrator or Orchestrator(settings or Settings())
    settings = orch.settings
    runs = RunManager(orch)
    clock = {"started": time.monotonic()}

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        clock["started"] = time.monotonic()
        own_tracing = settings.tracing_enabled and not tracing_enabled()
        if own_tracing:
            configure_tracing(True, service_name=SERVICE_NAME, otlp_endpoint=settings.otlp_endpoint)
        await orch.open()
        reflector = None
        try:
            await _warm_provider(orch)
            if resume_on_startup:
                serving: asyncio.Event | None = getattr(application.state, "serving", None)
                if serving is None:
                    await runs.resume_interrupted()
                else:
                    runs.spawn_after(serving, runs.resume_interrupted, name="jax-resume-when-serving")
            reflector = learning.start_reflector(orch)  # [learning] reflect_interval_s
            yield
        finally:
            if reflector is not None:
                await learning.stop_reflector(reflector)
            # engine: drain first (SIGTERM / shutdown): active runs stop taking symbols and let their
            # in-flight stages finish; they stay `running` for the next start-up to resume. Only then
            # cancel what is left.
            await _drain_active_runs(orch, SHUTDOWN_DRAIN_S)
            await runs.shutdown(SHUTDOWN_TIMEOUT_S)
            if owns_orchestrator:
                await orch.close()
            if own_tracing:
                shutdown_tracing()

    app = FastAPI(
        title="jax-orchestrator",
        version=__version__,
        description="Runs the Jax pipeline: market events -> trade setups -> risk decisions.",
        lifespan=lifespan,
    )
    app.state.orchestrator = orch
    app.state.runs = runs
    app.add_middleware(CorrelationIdMiddleware)
    install_error_handlers(app)

    def repo() -> Repository:
        return runs.repository

    def uptime() -> float:
        return round(time.monotonic() - clock["started"], 3)

    # ------------------------------------------------------------------ service

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "healthy", "service": SERVICE_NAME, "version": __version__, "uptime": uptime()}

    @app.get("/status")
    async def status() -> dict[str, Any]:
        return {
            "service": SERVICE_NAME,
            "version": __version__,
            "uptime": uptime(),
            "pipeline": list(settings.pipeline),
            "engine": {
                "concurrency": settings.engine.concurrency,
                "queueSize": settings.engine.queue_size,
                "drainTimeoutS": settings.engine.drain_timeout_s,
            },
            "runs": runs.snapshot(),
            "learning": learning.status(),
            **orch.status(),
        }

    async def metrics() -> Response:
        if isinstance(orch.metrics, NullMetrics):
            return JSONResponse(
                status_code=404,
                content={"error": "metrics are disabled (set JAX_METRICS_ENABLED=true to serve them)"},
            )
        body, content_type = orch.metrics.render()
        return Response(content=body, headers={"Content-Type": content_type})

    # /metrics/prometheus is the old service's path, which existing scrape configs still use.
    app.add_api_route("/metrics", metrics, methods=["GET"], response_class=Response)
    app.add_api_route("/metrics/prometheus", metrics, methods=["GET"], response_class=Response)

    # ------------------------------------------------------------------ runs

    async def accept(request: RunRequest, action: str, payload: dict[str, Any]) -> Run:
        """Validate, audit and start a run; the audit row records who asked for what, accepted or not."""
        try:
            prepared = runs.prepare(request)
            run = prepared.run
        except (JaxError, ValueError) as exc:
            await repo().record_audit(
                new_audit_event(action, "rejected", payload=payload, error=str(exc)),
                idempotency_key=f"api/{action}/{get_correlation_id()}/{time.time_ns()}",
            )
            raise
        event = new_audit_event(action, "started", payload={**payload, "runId": run.id})
        await repo().record_audit(event, idempotency_key=f"api/{event.id}", run_id=run.id)
        try:
            await runs.submit(prepared)
        except Exception as exc:
            await repo().record_audit(
                new_audit_event(action, "error", payload={"runId": run.id}, error=str(exc)),
                idempotency_key=f"api/{event.id}/error",
                run_id=run.id,
            )
            raise
        log.info("run accepted", run_id=run.id, symbols=len(run.symbols), action=action)
        return run

    @app.post("/process", status_code=202)
    async def process(body: Annotated[ProcessRequest | None, Body()] = None) -> JSONResponse:
        body = body or ProcessRequest()
        request = RunRequest(
            symbols=body.symbols,
            as_of=body.as_of,
            lookback=body.lookback,
            correlation_id=get_correlation_id(),
            stage_overrides=body.stage_overrides,
        )
        run = await accept(request, "api.process", body.model_dump(mode="json", by_alias=True))
        return JSONResponse(
            status_code=202,
            content={"runId": run.id, "status": "running", "correlationId": run.correlation_id},
            headers={"Location": f"/runs/{run.id}"},
        )

    @app.post("/orchestrate", status_code=201)
    async def orchestrate(body: OrchestrateRequest) -> JSONResponse:
        request = RunRequest(symbols=[body.symbol], correlation_id=get_correlation_id())
        run = await accept(request, "api.orchestrate", body.model_dump(mode="json"))
        return JSONResponse(
            status_code=201,
            content={"run_id": run.id, "status": "running"},
            headers={"Location": f"/runs/{run.id}"},
        )

    @app.get("/runs")
    async def list_runs(limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> list[dict[str, Any]]:
        return [r.to_contract() for r in await repo().list_runs(limit=limit)]

    @app.get("/runs/{run_id}")
    async def get_run(run_id: str) -> dict[str, Any]:
        run = await repo().get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r}")
        results = await repo().get_symbol_results(run_id)
        return {"run": run.to_contract(), "symbols": [r.to_contract() for r in results]}

    @app.get("/runs/{run_id}/events", response_class=StreamingResponse)
    async def run_events(run_id: str) -> StreamingResponse:
        stream = await runs.stream(run_id)
        if stream is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            # no-cache and no proxy buffering, or intermediaries hold events back until the run ends.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # ------------------------------------------------------------------ stored data (old V1 shapes)

    @app.get("/trades")
    async def list_trades(
        symbol: str | None = None,
        strategy_id: Annotated[str | None, Query(alias="strategyId")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        run_id: Annotated[str | None, Query(alias="runId")] = None,
    ) -> list[dict[str, Any]]:
        # With runId: that run's setups with that run's own decisions (sizes depend on the run).
        trades = await repo().list_trades(
            symbol=symbol.strip().upper() if symbol else None,
            strategy_id=strategy_id,
            limit=limit,
            run_id=run_id,
        )
        settled = await repo().outcomes_for(t.setup.id for t in trades)  # "outcome" once settled
        return [with_outcome(t.to_contract(), settled.get(t.setup.id)) for t in trades]

    @app.get("/trades/{trade_id}")
    async def get_trade(trade_id: str) -> dict[str, Any]:
        trade = await repo().get_trade(trade_id)
        if trade is None:
            raise HTTPException(404, f"no trade {trade_id!r}")
        settled = await repo().outcomes_for([trade_id])
        return with_outcome(trade.to_contract(), settled.get(trade_id))

    @app.get("/audit")
    async def audit(
        correlation_id: str | None = None,
        run_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[dict[str, Any]]:
        events = await repo().list_audit(correlation_id=correlation_id, run_id=run_id, limit=limit)
        return [e.to_contract() for e in events]

    return app


async def _warm_provider(orch: Orchestrator) -> None:
    """Load the symbol list once before serving, off the event loop.

    The first call parses the data (seconds for a large csv); done here, no request pays for it and a
    broken data source shows up in the log at start-up. The service still starts: /health keeps working
    and run requests get a 503 explaining the problem.
    """
    try:
        provider = orch.provider()
        count = len(await asyncio.to_thread(provider.symbols))
        log.info("market data ready", provider=provider.name, symbols=count, simulated=provider.simulated)
    except (MarketDataError, OSError) as exc:
        log.error("market data unavailable", error=str(exc))
