"""How the front ends (HTTP route, CLI) assemble an IngestService from an open orchestrator."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from jax_assistant.domain import Event
from jax_assistant.domain.errors import JaxError
from jax_assistant.ingest.models import Processing
from jax_assistant.ingest.service import IngestService, Retainer, Trigger
from jax_assistant.observability.logging import get_logger
from jax_assistant.orchestrator import Orchestrator, PreparedRun, RunRequest
from jax_assistant.service.admission import AdmissionRejectedError

log = get_logger("jax_assistant.ingest")


async def open_retainer(orch: Orchestrator) -> Retainer:
    """The configured memory (``[memory]``), sharing the orchestrator's database for the embedded one."""
    from jax_assistant.memory import open_memory

    return await open_memory(orch.settings, database=orch.db)


def run_trigger(orch: Orchestrator, start: Callable[[PreparedRun], Awaitable[None]]) -> Trigger:
    """A trigger that prepares a run of the symbols (unknown ones skipped) carrying the pushed events,
    and hands it to ``start``; ``start`` raising AdmissionRejectedError (the cap is full) defers it."""

    async def trigger(symbols: Sequence[str], correlation_id: str, events: Sequence[Event]) -> Processing:
        try:
            prepared = orch.prepare_run(
                RunRequest(
                    symbols=list(symbols),
                    correlation_id=correlation_id,
                    skip_unknown=True,
                    pushed_events=list(events),
                )
            )
        except JaxError as exc:  # e.g. no symbol the market-data provider knows: nothing to process
            return Processing(symbols=list(symbols), status="skipped", skipped=str(exc))
        try:
            await start(prepared)
        except AdmissionRejectedError as exc:  # nothing recorded: a re-send after Retry-After retries
            return Processing(
                symbols=prepared.run.symbols,
                status="deferred",
                retry_after_s=exc.retry_after_s,
                skipped=f"deferred: {exc}",
            )
        except Exception as exc:  # the observations are stored and audited: say so, do not fail them
            log.warning("ingest could not start processing", error=str(exc), correlation_id=correlation_id)
            return Processing(
                symbols=prepared.run.symbols, status="skipped", skipped=f"could not start a run: {exc}"
            )
        skipped = ", ".join(prepared.unknown)
        return Processing(
            symbols=prepared.run.symbols,
            run_id=prepared.run.id,
            events=len(prepared.run.params.get("pushedEvents", [])),
            skipped=f"unknown to the {prepared.provider.name} provider: {skipped}" if skipped else None,
        )

    return trigger


def ingest_service(orch: Orchestrator, memory: Retainer | None, trigger: Trigger | None) -> IngestService:
    if orch.db is None or orch.repository is None:
        raise RuntimeError("the orchestrator is not open")
    return IngestService(
        orch.db, orch.repository, memory=memory, trigger=trigger, threshold=orch.settings.ingest.threshold
    )
