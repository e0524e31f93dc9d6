"""Routes in the shapes existing callers already speak (``shared/reference/jax-contracts.md``).

- the front end: ``POST /api/v1/orchestrate``, ``GET /api/v1/orchestrate/runs[/{id}]`` (it polls a run
  every 2 s until ``completed`` or ``failed``, so every other state maps onto one of those three);
- the old V1 service: ``POST /symbols/{symbol}/process`` (synchronous: events and sized trades) and
  ``POST /risk/calc``.

Validation errors on these routes are **400** ``{"error": ..., "details": [...]}``, as the old Go
service answered (its JSON decoder failed the request with 400; it knew no 422). ``POST /orchestrate``
(registered in app.py next to ``POST /process``) uses the same route class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic.alias_generators import to_camel

from jax_assistant.api.common import errors, repository, run_manager
from jax_assistant.api.errors import error_response, validation_details
from jax_assistant.api.runs import RunManager
from jax_assistant.api.schemas import (
    MAX_SYMBOL_LENGTH,
    AcceptedOut,
    RiskCalcOut,
    RiskCalcRequest,
    SymbolProcessRequest,
    V1OrchestrateRequest,
    V1PlanOut,
    V1ProcessOut,
    V1RunOut,
    V1RunSummaryOut,
    V1ToolOut,
    V1TradeOut,
)
from jax_assistant.domain import Run, RunStatus, StageStatus, SymbolResult, TradeRecord, utc_now
from jax_assistant.domain.errors import InputError
from jax_assistant.observability.correlation import get_correlation_id
from jax_assistant.orchestrator import RunRequest
from jax_assistant.risk.sizing import RiskInputError, calculate_position
from jax_assistant.storage import Repository

# How long the synchronous V1 process route waits for its one-symbol run.
SYMBOL_PROCESS_TIMEOUT_S = 60.0

Accept = Callable[..., Awaitable[tuple[Run, bool]]]


class CompatRoute(APIRoute):
    """An APIRoute whose request-validation failures answer 400 (the old services' status)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                details = validation_details([dict(e) for e in exc.errors()])
                summary = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
                return error_response(400, summary, details=details)

        return handle


router = APIRouter(route_class=CompatRoute, tags=["compatibility"])


def _accept(request: Request) -> Accept:
    return cast(Accept, request.app.state.accept)


# ---------------------------------------------------------------------------- front end (V1 API)


@router.post("/api/v1/orchestrate", status_code=202, response_model=AcceptedOut, responses=errors(400, 503))
async def v1_orchestrate(
    body: V1OrchestrateRequest, accept: Annotated[Accept, Depends(_accept)]
) -> JSONResponse:
    request = RunRequest(symbols=[body.symbol], correlation_id=get_correlation_id())
    run, _ = await accept(request, "api.v1.orchestrate", body.model_dump(mode="json", by_alias=True))
    return JSONResponse(
        status_code=202,
        content={"runId": run.id, "status": "running", "correlationId": run.correlation_id},
        headers={"Location": f"/api/v1/orchestrate/runs/{run.id}"},
    )


@router.get("/api/v1/orchestrate/runs", response_model=list[V1RunSummaryOut], responses=errors(400))
async def v1_runs(
    repo: Annotated[Repository, Depends(repository)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> list[V1RunSummaryOut]:
    return [
        V1RunSummaryOut(
            run_id=r.id,
            symbol=r.symbols[0] if r.symbols else "",
            timestamp=r.started_at.isoformat().replace("+00:00", "Z"),
            success=r.status is RunStatus.COMPLETED,
        )
        for r in await repo.list_runs(limit=limit)
    ]


@router.get("/api/v1/orchestrate/runs/{run_id}", response_model=V1RunOut, responses=errors(404))
async def v1_run(run_id: str, repo: Annotated[Repository, Depends(repository)]) -> V1RunOut:
    run = await repo.get_run(run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return v1_view(run, await repo.get_symbol_results(run_id))


def v1_status(status: RunStatus) -> str:
    """The front end knows running, completed and failed only; it stops polling on the last two."""
    if status in (RunStatus.RUNNING, RunStatus.INTERRUPTED):  # interrupted: resumed at next start-up
        return "running"
    return "completed" if status is RunStatus.COMPLETED else "failed"


_STAGE_FAILED = {StageStatus.FAILED, StageStatus.TIMED_OUT, StageStatus.SHORT_CIRCUITED}


def v1_view(run: Run, results: list[SymbolResult]) -> V1RunOut:
    """A run as the front end's plan view: the best allowed setup is the action."""
    trades = [t for r in results for t in r.trades]
    allowed = sorted((t for t in trades if t.risk.allowed), key=lambda t: (-t.setup.confidence, t.setup.id))
    best: TradeRecord | None = allowed[0] if allowed else None
    events = sum(len(r.events) for r in results)
    done = sum(1 for r in results if r.status.terminal)
    summary = (
        f"{', '.join(run.symbols)}: {events} event(s), {len(trades)} setup(s), {len(allowed)} allowed"
        if run.status is not RunStatus.RUNNING
        else f"running: {done}/{len(run.symbols)} symbol(s) done"
    )
    if best is not None:
        s = best.setup
        action = f"{s.direction.value} {s.symbol} {best.risk.position_size} @ {s.entry:g} stop {s.stop:g}"
        notes = s.reason or s.notes or f"strategy {s.strategy_id}"
    else:
        action = "no_trade"
        rejected = [t for t in trades if not t.risk.allowed]
        notes = "; ".join(
            f"{t.setup.id}: {t.risk.constraints.reason or 'rejected'}" for t in rejected[:5]
        ) or ("no setups" if run.status is not RunStatus.RUNNING else "")
    steps = [
        f"{r.symbol}: {st.stage} {st.status.value} ({st.duration_ms:.0f} ms)"
        for r in results
        for st in r.stages
    ]
    tools = []
    for name in run.pipeline:
        seen = [st for r in results for st in r.stages if st.stage == name]
        tools.append(
            V1ToolOut(name=name, success=bool(seen) and not any(st.status in _STAGE_FAILED for st in seen))
        )
    end = run.finished_at or utc_now()
    return V1RunOut(
        plan=V1PlanOut(
            summary=summary,
            steps=steps,
            action=action,
            confidence=best.setup.confidence if best is not None else 0.0,
            reasoning_notes=notes,
        ),
        tools=tools,
        run_id=run.id,
        duration=round(max(0.0, (end - run.started_at).total_seconds()), 3),
        status=v1_status(run.status),
    )


# ---------------------------------------------------------------------------- old V1 service


@router.post("/symbols/{symbol}/process", response_model=V1ProcessOut, responses=errors(400, 503, 504))
async def symbol_process(
    symbol: Annotated[str, Path(min_length=1, max_length=MAX_SYMBOL_LENGTH)],
    accept: Annotated[Accept, Depends(_accept)],
    runs: Annotated[RunManager, Depends(run_manager)],
    body: Annotated[SymbolProcessRequest | None, Body()] = None,
) -> V1ProcessOut | JSONResponse:
    """Run one symbol now and answer with its events and sized trades (the old synchronous route)."""
    body = body or SymbolProcessRequest()
    request = RunRequest(
        symbols=[symbol],
        correlation_id=get_correlation_id(),
        account_size=body.account_size,
        risk_percent=body.risk_percent,
        detectors={"gap_threshold_pct": body.gap_threshold_pct} if body.gap_threshold_pct else None,
    )
    payload = {"symbol": symbol, **body.model_dump(mode="json", by_alias=True)}
    run, _ = await accept(request, "api.v1.symbol_process", payload)
    if not await runs.wait(run.id, SYMBOL_PROCESS_TIMEOUT_S):
        return error_response(504, f"run {run.id} is still running; see GET /runs/{run.id}")
    results = await runs.repository.get_symbol_results(run.id)
    return V1ProcessOut(
        events=[e.model_dump(mode="json", by_alias=True) for r in results for e in r.events],
        trades=[
            V1TradeOut(
                setup=t.setup.model_dump(mode="json", by_alias=True),
                risk=t.risk.model_dump(mode="json", by_alias=True),
            )
            for r in results
            for t in r.trades
        ],
    )


@router.post("/risk/calc", response_model=RiskCalcOut, responses=errors(400))
async def risk_calc(body: RiskCalcRequest) -> RiskCalcOut:
    try:
        sizing = calculate_position(body.account_size, body.risk_percent, body.entry, body.stop, body.target)
    except RiskInputError as exc:
        field = to_camel(exc.field or "body")
        message = str(exc).split(": ", 1)[-1]
        raise InputError(f"{field}: {message}", field=field, rule="range") from None
    return RiskCalcOut(
        position_size=sizing.position_size,
        risk_per_unit=sizing.risk_per_unit,
        total_risk=sizing.total_risk,
        r_multiple=sizing.r_multiple,
    )
