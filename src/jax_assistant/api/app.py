"""The orchestrator's HTTP service (FastAPI): start runs, follow them live, read what they stored.

A thin shell over :class:`~jax_assistant.orchestrator.Orchestrator`, like the CLI. See ``docs/api.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.types import Scope

from jax_assistant import __version__
from jax_assistant.api.cached import CachedJson, SameBytes
from jax_assistant.api.common import (
    NEXT_PAGE_HEADERS,
    decode_cursor,
    encode_cursor,
    errors,
    page_headers,
    run_detail,
    runs_out,
)
from jax_assistant.api.compat import CompatRoute
from jax_assistant.api.compat import router as v1_router
from jax_assistant.api.dead_letters import router as dead_letters_router
from jax_assistant.api.errors import install_error_handlers
from jax_assistant.api.hot_reads import HotHandler, HotPost, HotReadsMiddleware
from jax_assistant.api.ingest import router as ingest_router
from jax_assistant.api.page import router as page_router
from jax_assistant.api.runs import RunManager
from jax_assistant.api.schemas import (
    AcceptedOut,
    CancelOut,
    CheckOut,
    HealthOut,
    OrchestrateOut,
    OrchestrateRequest,
    ProcessRequest,
    ReadyOut,
    RunDetailOut,
    RunOut,
    StatusOut,
    TradeOut,
)
from jax_assistant.config import Settings
from jax_assistant.domain import AuditEvent, Run, RunStatus
from jax_assistant.domain.errors import InputError, JaxError
from jax_assistant.learning import service as learning
from jax_assistant.learning.outcomes import with_outcome
from jax_assistant.marketdata.base import MarketDataError
from jax_assistant.memory.outbox import drain_forever, outbox_status
from jax_assistant.observability.correlation import get_correlation_id, new_audit_event
from jax_assistant.observability.logging import get_logger
from jax_assistant.observability.metrics import NullMetrics, PipelineMetrics
from jax_assistant.observability.tracing import configure_tracing, shutdown_tracing, tracing_enabled
from jax_assistant.orchestrator import Orchestrator, RunError, RunRequest
from jax_assistant.research.report import research_status
from jax_assistant.service import Admission, ApiKeyStore, KeyStore, harden, scope_resolver
from jax_assistant.service.correlation import CorrelationIdMiddleware
from jax_assistant.storage import Repository
from jax_assistant.storage.db import HEAD_REVISION
from jax_assistant.storage.repository import AuditWrite

SERVICE_NAME = "jax-orchestrator"
# How stale /status may show what it reads from the database (outbox depth, research spend).
STATUS_STORED_TTL_S = 1.0
# How long shutdown waits for cancelled run tasks to unwind before closing the database.
SHUTDOWN_TIMEOUT_S = 10.0
# engine: how long shutdown lets in-flight stages finish (drain) before cancelling what is left.
SHUTDOWN_DRAIN_S = 5.0
# An RFC 3339 date-time (explicit offset), checked as a string: pydantic's datetime would also take a
# bare number as a unix timestamp, which the documented format does not allow.
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
# One Server-Sent Event as parsed by a client: its name and its one-line JSON data.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["symbol", "run"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "required": ["event", "data"],
}
# `POST /process?wait=true`: only small batches, and never longer than this before answering 202.
WAIT_MAX_SYMBOLS = 50
WAIT_TIMEOUT_S = 60.0

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
    executor_setup: Callable[[], None] | None = None,
) -> FastAPI:
    """The service. Pass ``orchestrator`` to share one (the caller then owns closing it).

    The lifespan opens storage (running migrations), warms the market-data provider and, with
    ``resume_on_startup``, resumes interrupted runs (``running`` with an expired lease). Shutdown
    drains runs still executing (in-flight stages finish, up to SHUTDOWN_DRAIN_S) then cancels what is
    left; they stay ``running``, checkpointed, with their lease released, and the next start-up (of any
    service on the database) resumes them.

    With ``[api] executor = "process"`` runs execute in an executor process (service/executor.py)
    started here; ``executor_setup`` (picklable) runs first in it (tests install stages with it).

    When the server sets ``app.state.serving`` (an ``asyncio.Event``; `jax serve` does, once its port
    is bound), the resume waits for it: a service that cannot bind its port touches no run.
    """
    owns_orchestrator = orchestrator is None
    orch = orchestrator or Orchestrator(settings or Settings())
    settings = orch.settings
    admission = Admission(settings.api.max_symbols_in_flight, settings.api.max_queued_runs)
    runs = RunManager(orch, admission)
    clock = {"started": time.monotonic()}
    data_state: dict[str, str | None] = {"error": None}

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        clock["started"] = time.monotonic()
        own_tracing = settings.tracing_enabled and not tracing_enabled()
        if own_tracing:
            configure_tracing(True, service_name=SERVICE_NAME, otlp_endpoint=settings.otlp_endpoint)
        await orch.open()
        # memsvc: retains that memory missed are retried in the background (memory/outbox.py).
        drainer = asyncio.create_task(drain_forever(orch, settings.memory.outbox_drain_s), name="jax-outbox")
        reflector = None
        try:
            data_state["error"] = await _warm_provider(orch)
            _warm_pipeline(orch)
            if settings.api.executor == "process":
                await runs.start_executor(executor_setup)
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
            admission.close()  # from here on a run request gets a 503, not a place in the queue
            drainer.cancel()
            await runs.stop_executor(SHUTDOWN_DRAIN_S)  # process mode: the executor drains its runs
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
        # Every route may answer these, in the one error shape (api/errors.py), not FastAPI's default.
        responses=errors(422, 500),
    )
    app.state.orchestrator = orch
    app.state.runs = runs
    app.state.admission = admission

    def key_store() -> KeyStore:
        if orch.db is None:
            raise RuntimeError("the orchestrator is not open (the app's lifespan did not run)")
        return ApiKeyStore(orch.db)

    # Innermost (added first): the polled reads, answered inside every guard below (api/hot_reads.py).
    hot_reads: dict[str, HotHandler] = {}
    hot_posts: dict[str, HotPost] = {}
    # The exception handlers are read at the first hot POST, once install_error_handlers has run.
    app.add_middleware(
        HotReadsMiddleware, handlers=hot_reads, posts=hot_posts, exception_handlers=app.exception_handlers
    )
    # The audit trail holds every caller's payloads: an admin key reads it when auth is on.
    harden(
        app, settings.api, key_store=key_store, needs=scope_resolver(settings.api, admin_prefixes=["/audit"])
    )

    app.add_middleware(CorrelationIdMiddleware)
    install_error_handlers(app)

    def repo() -> Repository:
        return runs.repository

    def uptime() -> float:
        # Whole seconds: the cached /health and /status bodies then change at most once a second for it.
        return float(int(time.monotonic() - clock["started"]))

    # ------------------------------------------------------------------ service

    def data_problem() -> str | None:
        """Why the configured market data is unusable, or None. Cheap: /health calls it every time."""
        if data_state["error"] is not None:
            return data_state["error"]
        path = settings.data_path
        if settings.provider == "csv" and path is not None and not os.access(path, os.R_OK):
            return f"market data {path} is not readable"
        return None

    health_body = CachedJson()

    @app.get("/health", response_model=HealthOut, response_model_exclude_none=True)
    async def health() -> Response:
        # Still 200 when degraded: the process is alive (a liveness probe must not restart it for bad
        # data); /ready is the probe that says "do not send work here". Cached bytes, not the model:
        # probes call this often, and the model above only documents it (schemathesis checks the match).
        problem = data_problem()
        up = uptime()

        def build() -> dict[str, Any]:
            body: dict[str, Any] = {
                "status": "degraded" if problem else "healthy",
                "service": SERVICE_NAME,
                "version": __version__,
                "uptime": up,
            }
            if problem:
                body["reason"] = problem
            return body

        return health_body.response((up, problem), build)

    @app.get(
        "/ready",
        response_model=ReadyOut,
        responses={503: {"model": ReadyOut, "description": "not ready (see which check failed)"}},
    )
    async def ready() -> JSONResponse:
        checks: dict[str, CheckOut] = {}
        try:
            revisions = await repo().schema_revisions()
            checks["database"] = CheckOut(ok=True, detail="reachable")
            at_head = revisions == [HEAD_REVISION]
            shown = ", ".join(revisions) or "none"
            checks["migrations"] = CheckOut(
                ok=at_head, detail=f"at {shown}" + ("" if at_head else f" (expected {HEAD_REVISION})")
            )
        except Exception as exc:  # any driver error means "not reachable" to a probe
            checks["database"] = CheckOut(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])
            checks["migrations"] = CheckOut(ok=False, detail="unknown (database unreachable)")
        data_state["error"] = await _check_data(orch)
        problem = data_problem()
        checks["data"] = CheckOut(ok=problem is None, detail=problem or "readable")
        ok = all(c.ok for c in checks.values())
        body = ReadyOut(status="ready" if ok else "not_ready", checks=checks)
        return JSONResponse(status_code=200 if ok else 503, content=body.model_dump(mode="json"))

    status_body = CachedJson()

    def status_key(up: float) -> tuple[object, ...] | None:
        """Changes whenever the /status body would; None (build per request) while a run executes,
        since its per-stage counters change without a version (and change constantly anyway).

        Outside runs: the metrics version (breaker state changes, dependency calls), admission's
        version, the run manager's and learning's small snapshots, the stored-status refresh, and the
        second of uptime, which also bounds the age of counters nothing versions (a breaker's call
        counts from the memory outbox's retries) to a second."""
        execution = runs.execution_key()
        if execution is None:
            return None
        metrics = orch.metrics
        version = metrics.version if isinstance(metrics, PipelineMetrics) else None
        return (up, version, execution, admission.version, runs.snapshot(), learning.status(), stored["gen"])

    @app.get("/status", response_model=StatusOut)
    async def status() -> Response:
        # Cached bytes, like /health: a hot path the model only documents.
        extra = await stored_status()
        up = uptime()
        return status_body.response(
            status_key(up),
            lambda: {
                "service": SERVICE_NAME,
                "version": __version__,
                "uptime": up,
                "pipeline": list(settings.pipeline),
                "engine": {
                    "concurrency": settings.engine.concurrency,
                    "queueSize": settings.engine.queue_size,
                    "drainTimeoutS": settings.engine.drain_timeout_s,
                },
                "runs": runs.snapshot(),
                "admission": admission.snapshot(),
                "learning": learning.status(),
                **runs.execution_status(),
                **extra,
            },
        )

    # The outbox depth and the research spend are database reads: refreshed at most every
    # STATUS_STORED_TTL_S, so a monitor polling /status never puts a query on every request.
    # "gen" counts completed refreshes (part of the /status cache key).
    stored: dict[str, Any] = {"at": None, "value": None, "gen": 0}

    async def stored_status() -> dict[str, Any]:
        now = time.monotonic()
        if stored["value"] is None or now - stored["at"] >= STATUS_STORED_TTL_S:
            stored["at"] = now  # concurrent callers meanwhile serve the previous value
            stored["value"] = {
                "memoryOutbox": await outbox_status(orch),
                "research": await research_status(settings.research, orch.db),
            }
            stored["gen"] += 1
        value: dict[str, Any] = stored["value"]
        return value

    metrics_body = SameBytes()

    async def metrics() -> Response:
        if isinstance(orch.metrics, NullMetrics):
            return JSONResponse(
                status_code=404,
                content={"error": "metrics are disabled (set JAX_METRICS_ENABLED=true to serve them)"},
            )
        body, content_type = await runs.render_metrics()
        return metrics_body.response(body, content_type)  # it names its charset: kept as is

    metrics_responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
        **errors(404),
    }
    # /metrics/prometheus is the old service's path, which existing scrape configs still use.
    for path in ("/metrics", "/metrics/prometheus"):
        app.add_api_route(
            path, metrics, methods=["GET"], response_class=Response, responses=metrics_responses
        )
    hot_reads.update({"/health": health, "/status": status, "/metrics": metrics})

    # ------------------------------------------------------------------ runs

    async def accept(
        request: RunRequest, action: str, payload: dict[str, Any], *, idempotency_key: str | None = None
    ) -> tuple[Run, bool]:
        """Validate, audit and start a run; the audit row records who asked for what, accepted or not.

        With ``idempotency_key`` the ``started`` audit row is stored under that key (unique in the
        table), so of two submissions with one key exactly one starts a run; the other, and any later
        one, gets that run back (``True`` = replayed). A key reused with another body is a 409.
        """
        key = f"api/{action}/key/{idempotency_key}" if idempotency_key else None
        digest = ""  # the body's hash matters only to a keyed request (replays and conflicts)
        if key is not None:
            digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
            if (replay := await replayed(key, digest)) is not None:
                return replay, True
        # Busy or stopping: refused before validation (about 1 ms of CPU a request in a burst).
        admission.refuse_if_full()
        try:
            prepared = runs.prepare(request)
            run = prepared.run
        except (JaxError, ValueError) as exc:
            await repo().record_audit(
                new_audit_event(action, "rejected", payload=payload, error=str(exc)),
                idempotency_key=f"api/{action}/{get_correlation_id()}/{time.time_ns()}",
            )
            raise
        # Refused (429/503) before anything is written: a burst of refusals costs no database writes.
        ticket = admission.admit(min(len(run.symbols), settings.engine.concurrency))
        extra = {"idempotencyKey": idempotency_key, "requestHash": digest} if key else {}
        event = new_audit_event(action, "started", payload={**payload, "runId": run.id, **extra})
        try:
            # The run row and this audit row in one transaction, shared with the accepts beside it.
            audit = AuditWrite(event, key or f"api/{event.id}", run.id)
            if not await runs.submit(prepared, ticket=ticket, audit=audit):
                # A concurrent submission with the same key won: answer with its run.
                ticket.release()
                if key is not None and (replay := await replayed(key, digest)) is not None:
                    return replay, True
                raise HTTPException(
                    409, "the request with this Idempotency-Key is still being accepted; retry"
                )
        except HTTPException:
            raise
        except Exception as exc:
            ticket.release()
            # The trail still shows the request and why it failed: its `started` record (rolled back
            # with the run row, or never written) goes in without the Idempotency-Key, which stays
            # free for a retry; a no-op when it was stored (its id is recorded).
            await repo().record_audit(event, idempotency_key=f"api/{event.id}", run_id=run.id)
            await repo().record_audit(
                new_audit_event(action, "error", payload={"runId": run.id}, error=str(exc)),
                idempotency_key=f"api/{event.id}/error",
                run_id=run.id,
            )
            raise
        log.info("run accepted", run_id=run.id, symbols=len(run.symbols), action=action)
        return run, False

    async def replayed(key: str, digest: str) -> Run | None:
        found = await repo().get_audit_by_key(key)
        if found is None:
            return None
        event, run_id = found
        if event.payload.get("requestHash") != digest:
            # 409, not 422: the body is valid, it conflicts with what the key already stands for.
            raise HTTPException(409, "Idempotency-Key was already used with a different request body")
        # The winner writes its run row right after its audit row: wait for it briefly.
        deadline = time.monotonic() + 5.0
        while run_id is not None and time.monotonic() < deadline:
            run = await repo().get_run(run_id)
            if run is not None:
                return run
            await asyncio.sleep(0.02)
        raise HTTPException(409, "the request with this Idempotency-Key is still being accepted; retry")

    @app.post(
        "/process",
        status_code=202,
        response_model=AcceptedOut,
        responses={
            200: {"model": RunDetailOut, "description": "wait=true and the run ended within the wait"},
            **errors(400, 409, 422, 503),
        },
    )
    async def process(
        body: Annotated[ProcessRequest | None, Body()] = None,
        wait: Annotated[
            bool,
            Query(
                description=f"answer once the run ends (up to {WAIT_TIMEOUT_S:g} s; at most "
                f"{WAIT_MAX_SYMBOLS} symbols), with the run and its symbols"
            ),
        ] = False,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=200,
                pattern=r"^[\x21-\x7e]+$",
                description="a retry with the same key (and body) returns the same run, never a second",
            ),
        ] = None,
    ) -> JSONResponse:
        return await process_run(body or ProcessRequest(), wait, idempotency_key)

    async def process_run(body: ProcessRequest, wait: bool, idempotency_key: str | None) -> JSONResponse:
        """`POST /process` once its inputs are parsed: from the route, or from the hot path below."""
        request = RunRequest(
            symbols=body.symbols,
            as_of=body.as_of,
            lookback=body.lookback,
            correlation_id=get_correlation_id(),
            stage_overrides=body.stage_overrides,
            account_size=body.account_size,
            risk_percent=body.risk_percent,
            data_source=body.data_source,
        )
        if wait:
            # Checked before anything starts: a long batch belongs in the background, polled or streamed.
            symbols, _ = orch.resolve_symbols(orch.request_provider(request), request.symbols)
            if len(symbols) > WAIT_MAX_SYMBOLS:
                raise InputError(
                    f"wait=true: at most {WAIT_MAX_SYMBOLS} symbols (this run has {len(symbols)}); "
                    "poll GET /runs/{id} or stream /runs/{id}/events instead",
                    field="wait",
                    rule="max_symbols",
                )
        payload = body.model_dump(mode="json", by_alias=True)
        run, again = await accept(request, "api.process", payload, idempotency_key=idempotency_key)
        headers = {"Location": f"/runs/{run.id}"}
        if again:
            headers["Idempotent-Replayed"] = "true"
        if wait and await runs.wait(run.id, WAIT_TIMEOUT_S):
            detail = await run_detail(repo(), run.id)
            if detail is not None and detail.run.status is not RunStatus.RUNNING:
                return JSONResponse(
                    status_code=200, content=detail.model_dump(mode="json", by_alias=True), headers=headers
                )
        return JSONResponse(
            status_code=202,
            content={"runId": run.id, "status": "running", "correlationId": run.correlation_id},
            headers=headers,
        )

    def hot_process(scope: Scope, raw: bytes) -> Callable[[], Awaitable[Response]] | None:
        """The common `POST /process` (no query, no Idempotency-Key, a JSON object its model takes)
        parsed as the route would parse it, without FastAPI's routing and dependency solving (about a
        third of an accept's CPU); anything else is declined and takes the route (api/hot_reads.py)."""
        if scope.get("query_string") or not raw:
            return None
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                if content_type is not None:
                    return None
                content_type = value
            elif name == b"idempotency-key":
                return None
        if content_type != b"application/json":
            return None
        try:
            doc = json.loads(raw)  # what the route does (Request.json), then its model's validation
        except (ValueError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        try:
            body = ProcessRequest.model_validate(doc)
        except ValidationError:
            return None
        return lambda: process_run(body, False, None)

    hot_posts["/process"] = hot_process

    async def orchestrate(body: OrchestrateRequest) -> JSONResponse:
        request = RunRequest(symbols=[body.symbol], correlation_id=get_correlation_id())
        run, _ = await accept(request, "api.orchestrate", body.model_dump(mode="json"))
        return JSONResponse(
            status_code=201,
            content={"run_id": run.id, "status": "running"},
            headers={"Location": f"/runs/{run.id}"},
        )

    # The old contract's route: validation errors are 400s, as its callers expect (see api/compat.py).
    compat_router = APIRouter(route_class=CompatRoute, tags=["compatibility"])
    compat_router.add_api_route(
        "/orchestrate",
        orchestrate,
        methods=["POST"],
        status_code=201,
        response_model=OrchestrateOut,
        responses=errors(400, 503),
    )
    app.include_router(compat_router)
    app.state.accept = accept

    @app.get(
        "/runs",
        response_model=list[RunOut],
        responses={200: {"headers": NEXT_PAGE_HEADERS}, **errors(400, 422)},
    )
    async def list_runs(
        request: Request,
        response: Response,
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
        status: Annotated[RunStatus | None, Query(description="only runs in this state")] = None,
        symbol: Annotated[str | None, Query(max_length=32, description="only runs of this symbol")] = None,
        since: Annotated[
            str | None,
            Query(
                pattern=RFC3339,
                description="only runs started at or after (RFC 3339, e.g. 2025-06-27T00:00:00Z)",
            ),
        ] = None,
        cursor: Annotated[str | None, Query(max_length=500, description="X-Next-Cursor of a page")] = None,
    ) -> list[RunOut]:
        page = await repo().list_runs_page(
            status=status,
            symbol=symbol.strip().upper() if symbol else None,
            since=_instant(since, "since") if since else None,
            before=decode_cursor(cursor),
            limit=limit + 1,
        )
        more = len(page) > limit
        page = page[:limit]
        last = page[-1] if more else None
        response.headers.update(
            page_headers(request, encode_cursor(last.started_at, last.id) if last else None)
        )
        return await runs_out(repo(), page)

    @app.get("/runs/{run_id}", response_model=RunDetailOut, responses=errors(404))
    async def get_run(run_id: str) -> RunDetailOut:
        detail = await run_detail(repo(), run_id)
        if detail is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return detail

    @app.post("/runs/{run_id}/cancel", status_code=202, response_model=CancelOut, responses=errors(404, 409))
    async def cancel_run(run_id: str) -> CancelOut:
        try:
            await runs.cancel(run_id)
        except LookupError:
            raise HTTPException(404, f"no run {run_id!r}") from None
        except RunError as exc:
            raise HTTPException(409, str(exc)) from None
        return CancelOut(run_id=run_id, status="cancelling")

    @app.get(
        "/runs/{run_id}/events",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
                "description": "Server-Sent Events: `symbol` per finished symbol, then one `run`",
            },
            **errors(404),
        },
    )
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

    # ------------------------------------------------------------------ stored data

    @app.get("/trades", response_model=list[TradeOut], responses=errors(422))
    async def list_trades(
        symbol: Annotated[str | None, Query(max_length=32)] = None,
        strategy_id: Annotated[str | None, Query(alias="strategyId", max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        run_id: Annotated[str | None, Query(alias="runId", max_length=128)] = None,
    ) -> list[TradeOut]:
        # With runId: that run's setups with that run's own decisions (sizes depend on the run).
        trades = await repo().list_trades(
            symbol=symbol.strip().upper() if symbol else None,
            strategy_id=strategy_id,
            limit=limit,
            run_id=run_id,
        )
        settled = await repo().outcomes_for(t.setup.id for t in trades)  # "outcome" once settled
        return [
            TradeOut.model_validate(with_outcome(t.to_contract(), settled.get(t.setup.id))) for t in trades
        ]

    @app.get("/trades/{trade_id}", response_model=TradeOut, responses=errors(404))
    async def get_trade(trade_id: str) -> TradeOut:
        trade = await repo().get_trade(trade_id)
        if trade is None:
            raise HTTPException(404, f"no trade {trade_id!r}")
        settled = await repo().outcomes_for([trade_id])
        return TradeOut.model_validate(with_outcome(trade.to_contract(), settled.get(trade_id)))

    @app.get(
        "/audit",
        response_model=list[AuditEvent],
        responses={200: {"headers": NEXT_PAGE_HEADERS}, **errors(400, 422)},
    )
    async def audit(
        request: Request,
        response: Response,
        correlation_id: Annotated[str | None, Query(max_length=256)] = None,
        run_id: Annotated[str | None, Query(max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
        cursor: Annotated[str | None, Query(max_length=500, description="X-Next-Cursor of a page")] = None,
    ) -> list[AuditEvent]:
        """Audit records, newest first."""
        events = await repo().list_audit_page(
            correlation_id=correlation_id, run_id=run_id, before=decode_cursor(cursor), limit=limit + 1
        )
        more = len(events) > limit
        events = events[:limit]
        last = events[-1] if more else None
        response.headers.update(
            page_headers(request, encode_cursor(last.timestamp, last.id) if last else None)
        )
        return events

    # Routers after the routes above: each request tries routes in order, and an included router's
    # match costs several µs, which /health and /status polls would otherwise pay before their own.
    app.include_router(ingest_router)  # POST /ingest (api/ingest.py)
    app.include_router(dead_letters_router)
    app.include_router(v1_router)
    app.include_router(page_router)
    return app


def _instant(value: str, field: str) -> datetime:
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError as exc:  # the pattern passed, the calendar did not (e.g. month 13)
        raise InputError(f"{field}: {exc}", field=field, rule="rfc3339") from None


async def _check_data(orch: Orchestrator) -> str | None:
    """For /ready: can the configured data be loaded? Off the loop (a provider that failed before is
    loaded again, which may take seconds) and quiet on success (probes call it every few seconds)."""
    try:
        provider = await asyncio.to_thread(orch.provider)
        await asyncio.to_thread(provider.symbols)
    except (MarketDataError, OSError) as exc:
        return f"market data unavailable: {exc}"
    return None


def _warm_pipeline(orch: Orchestrator) -> None:
    """Build the configured pipeline once before serving: its stage plugins are discovered then
    (entry points, about 15 ms, kept by the orchestrator), not inside the first run request, where
    that stall is most of the accept p99. A broken pipeline is left for that request to report."""
    with contextlib.suppress(Exception):
        orch.stages(None)


async def _warm_provider(orch: Orchestrator) -> str | None:
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
        return f"market data unavailable: {exc}"
    return None
