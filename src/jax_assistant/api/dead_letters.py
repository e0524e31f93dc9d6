"""Dead letters over HTTP: list them, retry one (the CLI's `jax dlq list|retry`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import JSONResponse

from jax_assistant.api.common import errors, run_manager
from jax_assistant.api.runs import RunManager
from jax_assistant.api.schemas import AcceptedOut, DeadLetterOut
from jax_assistant.orchestrator import RunError
from jax_assistant.storage.repository import DeadLetter

router = APIRouter(tags=["dead letters"])


def _out(d: DeadLetter) -> DeadLetterOut:
    return DeadLetterOut(
        id=d.id,
        run_id=d.run_id,
        symbol=d.symbol,
        stage=d.stage,
        error=d.error,
        attempts=d.attempts,
        status=d.status,
        created_at=d.created_at,
        retried_by_run_id=d.retried_by_run_id,
    )


@router.get("/dead-letters", response_model=list[DeadLetterOut], responses=errors(422))
async def list_dead_letters(
    runs: Annotated[RunManager, Depends(run_manager)],
    run_id: Annotated[str | None, Query(alias="runId", max_length=128)] = None,
    status: Annotated[Literal["open", "retried", "resolved", "all"], Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterOut]:
    """Symbols that failed a required stage, oldest first, with the error and the stage to retry from."""
    letters = await runs.repository.list_dead_letters(
        run_id=run_id, status=None if status == "all" else status
    )
    return [_out(d) for d in letters[:limit]]


@router.post(
    "/dead-letters/{dead_letter_id}/retry",
    status_code=202,
    response_model=AcceptedOut,
    responses=errors(404, 409, 422, 503),
)
async def retry_dead_letter(
    # Bounded to the id column's range (a 32-bit integer on PostgreSQL).
    dead_letter_id: Annotated[int, Path(ge=1, le=2_147_483_647)],
    runs: Annotated[RunManager, Depends(run_manager)],
) -> JSONResponse:
    """Re-run the dead letter's symbol from the stage that failed, as a new run (answered once it exists)."""
    letter = await runs.repository.get_dead_letter(dead_letter_id)
    if letter is None:
        raise HTTPException(404, f"no dead letter {dead_letter_id}")
    if letter.status != "open":
        raise HTTPException(
            409, f"dead letter {dead_letter_id} is {letter.status} (by run {letter.retried_by_run_id})"
        )
    try:
        run_id = await runs.retry_dead_letter(letter)
    except RunError as exc:  # e.g. retried by someone else meanwhile
        raise HTTPException(409, str(exc)) from None
    run = await runs.repository.get_run(run_id)
    return JSONResponse(
        status_code=202,
        content={
            "runId": run_id,
            "status": "running",
            "correlationId": run.correlation_id if run else "",
        },
        headers={"Location": f"/runs/{run_id}"},
    )
