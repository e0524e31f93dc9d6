"""``jax ingest FILE``: push an observation batch from a file (or ``-`` for stdin), as POST /ingest does.

Prints one line per observation (its outcome and, for a rejected one, why) and, with ``--process``
(default ``[ingest] process``), runs the batch's significant symbols here and now. Exit status: 0 when
every item was accepted or already known, 2 when any was rejected (the valid ones are still stored),
1 when one failed for a dependency (memory) and may be re-sent.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

STATUS_STYLE = {"accepted": "green", "duplicate": "cyan", "rejected": "red", "failed": "yellow"}


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


def ingest(
    file: Annotated[str, typer.Argument(help="JSON batch {generated_at, observations: [...]}; - for stdin")],
    process: Annotated[
        bool | None,
        typer.Option("--process/--no-process", help="run the significant symbols (default [ingest])"),
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", help="audit under this ID")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole result as JSON")] = False,
    db: Annotated[str | None, typer.Option("--db", help="database URL")] = None,
) -> None:
    """Ingest an observation batch: normalise, store once, remember the significant ones, process them."""
    from jax_assistant.cli import _errors, _fail, _settings, out
    from jax_assistant.domain.errors import InputError
    from jax_assistant.ingest.models import IngestResult
    from jax_assistant.ingest.wiring import ingest_service, open_retainer, run_trigger
    from jax_assistant.observability.correlation import bind_correlation_id, new_correlation_id
    from jax_assistant.orchestrator import Orchestrator, PreparedRun

    settings = _settings(database_url=db)
    with _errors():
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(
                f"{file}: cannot read ({exc.strerror or exc})", field="FILE", rule="readable"
            ) from None
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{file}: not valid JSON ({exc})", field="FILE", rule="json") from None
        cid = correlation_id or new_correlation_id()
        do_process = settings.ingest.process if process is None else process

        async def main() -> IngestResult:
            with bind_correlation_id(cid):
                async with Orchestrator(settings) as orch:

                    async def start(prepared: PreparedRun) -> None:
                        await orch.execute(prepared)

                    memory = await open_retainer(orch)
                    try:
                        trigger = run_trigger(orch, start) if do_process else None
                        return await ingest_service(orch, memory, trigger).ingest(payload, correlation_id=cid)
                    finally:
                        close = getattr(memory, "close", None)
                        if close is not None:
                            await close()

        result = asyncio.run(main())
    if as_json:
        out.print_json(result.model_dump_json())
    else:
        table = Table("#", "status", "type", "symbol", "sig", "bank", "reason", box=None, pad_edge=False)
        for item in result.items:
            reason = "; ".join(f"{e.field}: {e.message}" for e in item.errors)
            style = STATUS_STYLE[item.status]
            table.add_row(
                str(item.index),
                f"[{style}]{item.status}[/]",
                escape(item.type or "-"),
                escape(item.symbol or "-"),
                "yes" if item.significant else "",
                item.bank or "",
                escape(reason),
            )
        out.print(table)
        out.print(
            f"{result.received} received: {result.accepted} accepted, {result.duplicates} duplicate, "
            f"{result.rejected} rejected, {result.failed} failed (correlation id {result.correlation_id})"
        )
        if result.processing is not None:
            p = result.processing
            line = f"processing {', '.join(p.symbols)}: " + (
                f"run {p.run_id} with {p.events} pushed event(s)" if p.run_id else "not started"
            )
            out.print(escape(line + (f" ({p.skipped})" if p.skipped else "")))
    if result.failed:
        raise typer.Exit(1)
    if result.rejected:
        raise _fail(f"{result.rejected} observation(s) rejected (the others were stored)", 2)
