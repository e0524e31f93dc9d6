"""``POST /ingest``: pushed observation batches (docs/ingest.md).

A plain APIRouter: the service's auth and request limits are applied where it is included. The body
is ``{generated_at, observations: [...]}``; the answer is 200 with every item's outcome (accepted,
duplicate, rejected with reasons, failed) whenever the envelope is valid, 400 naming the field when
it is not. Significant new observations start one run of their symbols in the background, under the
request's correlation ID, exactly as POST /process does.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request

from jax_assistant.api.common import errors
from jax_assistant.domain.errors import InputError
from jax_assistant.ingest.models import IngestResult
from jax_assistant.ingest.service import Retainer
from jax_assistant.ingest.wiring import ingest_service, open_retainer, run_trigger
from jax_assistant.observability.correlation import get_correlation_id, new_correlation_id
from jax_assistant.orchestrator import Orchestrator

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
async def ingest(request: Request) -> IngestResult:
    raw = await request.body()
    try:
        payload: Any = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"body: not valid JSON ({exc})", field="body", rule="json") from None
    orch: Orchestrator = request.app.state.orchestrator
    runs = request.app.state.runs
    trigger = run_trigger(orch, runs.submit) if orch.settings.ingest.process else None
    service = ingest_service(orch, await _memory(request, orch), trigger)
    return await service.ingest(payload, correlation_id=get_correlation_id() or new_correlation_id())
