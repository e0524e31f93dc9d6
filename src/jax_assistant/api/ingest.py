"""``POST /ingest``: pushed observation batches (docs/ingest.md).

A plain APIRouter: the service's auth and request limits are applied where it is included. The body
is ``{generated_at, observations: [...]}``; the answer is 200 with every item's outcome (accepted,
duplicate, rejected with reasons, failed) whenever the envelope is valid, 400 naming the field when
it is not. Significant new observations start one run of their symbols in the background, under the
request's correlation ID and through the same admission cap as POST /process; when the cap is full the
answer is still 200 (every item is stored and remembered) with ``processing.status = "deferred"``, each
such item's ``processing = "deferred"`` and a ``Retry-After`` header: re-send the batch then.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response

from jax_assistant.api.common import errors
from jax_assistant.domain.errors import InputError
from jax_assistant.ingest.models import IngestResult
from jax_assistant.ingest.service import Retainer
from jax_assistant.ingest.wiring import ingest_service, open_retainer, run_trigger
from jax_assistant.observability.correlation import get_correlation_id, new_correlation_id
from jax_assistant.orchestrator import Orchestrator, PreparedRun

router = APIRouter(tags=["ingest"])


async def _memory(request: Request, orch: Orchestrator) -> Retainer:
    # Opened once per app on first use and kept: it shares the orchestrator's database.
    memory: Retainer | None = getattr(request.app.state, "ingest_memory", None)
    if memory is None:
        memory = request.app.state.ingest_memory = await open_retainer(orch)
    return memory


# The body is read raw (each observation is validated on its own, so one bad item never rejects the
# batch): a body that is not JSON at all is the only whole-request 400.
@router.post("/ingest", response_model=IngestResult, responses=errors(400))
async def ingest(request: Request, response: Response) -> IngestResult:
    raw = await request.body()
    try:
        payload: Any = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"body: not valid JSON ({exc})", field="body", rule="json") from None
    orch: Orchestrator = request.app.state.orchestrator
    runs = request.app.state.runs
    admission = request.app.state.admission

    async def start(prepared: PreparedRun) -> None:
        # The same cap as POST /process: admit raises AdmissionRejectedError (the trigger defers) before
        # anything is recorded, and the run frees its place when it ends.
        ticket = admission.admit(min(len(prepared.run.symbols), orch.settings.engine.concurrency))
        try:
            await runs.submit(prepared, ticket=ticket)
        except BaseException:
            ticket.release()
            raise

    trigger = run_trigger(orch, start) if orch.settings.ingest.process else None
    service = ingest_service(orch, await _memory(request, orch), trigger)
    result = await service.ingest(payload, correlation_id=get_correlation_id() or new_correlation_id())
    if result.processing is not None and result.processing.retry_after_s is not None:
        response.headers["Retry-After"] = str(result.processing.retry_after_s)  # when to re-send
    return result
