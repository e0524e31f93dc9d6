"""The ``jax`` command line (Typer + rich).

Progress and tables go to stderr/stdout for people; ``--json`` prints only the machine-readable result
on stdout. Exit codes: 0 the run ran (symbols may still have failed: see the table), 2 bad input (any
``ConfigError``, ``InputError`` or ``DataError``: unknown symbols, bad dates, unreadable files, bad
config), 1 the run could not start for another reason (``UnavailableError``: the database or a service
cannot be reached), 130 cancelled with Ctrl-C. Every error is one line on stderr starting ``error:``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from jax_assistant.cli_ingest import register as _register_ingest  # typer and rich only at import

# Everything of ours is imported by the command that uses it: `jax --help` should not pay for storage,
# migrations, polars and the pipeline (measured in the report of this change), and `jax run` never
# loads FastAPI or uvicorn.
if TYPE_CHECKING:
    from jax_assistant.config import Settings
    from jax_assistant.domain import Run, SymbolResult
    from jax_assistant.orchestrator import Orchestrator, RunOutcome

app = typer.Typer(
    help="jax-assistant: scan markets, detect events, size trades, keep running.", no_args_is_help=True
)
runs_app = typer.Typer(help="Inspect stored runs.", no_args_is_help=True)
trades_app = typer.Typer(help="Inspect stored trade setups with their risk decision.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-lettered symbols: list and retry.", no_args_is_help=True)
data_app = typer.Typer(help="Market data checks.", no_args_is_help=True)
db_app = typer.Typer(help="The database: create or migrate it, prune old runs.", no_args_is_help=True)


def _register_learning(main: typer.Typer) -> None:
    from jax_assistant.cli_learning import register  # jax replay / jax reflect

    register(main)


@app.callback()
def _process_setup() -> None:
    """jax-assistant: scan markets, detect events, size trades, keep running."""
    if "--help" not in sys.argv[1:]:
        from jax_assistant.engines.tuning import skip_exit_collection, tune_gc_for_runs

        tune_gc_for_runs()
        skip_exit_collection()


app.add_typer(runs_app, name="runs")
app.add_typer(trades_app, name="trades")
app.add_typer(dlq_app, name="dlq")
app.add_typer(data_app, name="data")
app.add_typer(db_app, name="db")
from jax_assistant.cli_keys import keys_app  # noqa: E402 - its own module, imports nothing heavy

app.add_typer(keys_app, name="keys")

# memsvc: `jax memory serve` (the jax-memory service) lives in its own module.
from jax_assistant.cli_memory import memory_app  # noqa: E402

app.add_typer(memory_app, name="memory")

_register_ingest(app)  # `jax ingest FILE` (cli_ingest.py)
_register_learning(app)

out = Console()
err = Console(stderr=True)

STATUS_STYLE = {
    "succeeded": "green",
    "degraded": "yellow",
    "failed": "red",
    "cancelled": "magenta",
    "running": "cyan",
    "completed": "green",
    "interrupted": "yellow",
}
SIMULATED_BANNER = "SIMULATED market data (bundled sample provider) - not real prices"


def _fail(message: str, code: int = 2) -> typer.Exit:
    # One line whatever the terminal: soft_wrap stops rich folding at 80 columns on a pipe, and the
    # message is escaped so a symbol or file name in [brackets] is printed, not read as markup.
    line = " ".join(str(message).split())
    err.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def _parse_date(value: str | None, option: str = "--as-of") -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail(f"{option} {value!r} is not a date: use YYYY-MM-DD, e.g. 2017-11-10") from None


# How a bad value given on the command line is named in its error line.
OPTION_NAMES = {
    "provider": "--provider",
    "data_path": "--data",
    "account_size": "--account-size",
    "risk_percent": "--risk-percent",
    "database_url": "--db",
}


def _settings(**overrides: Any) -> Settings:
    from jax_assistant.config import load_settings
    from jax_assistant.domain.errors import JaxError
    from jax_assistant.observability.logging import configure_logging

    try:
        settings = load_settings(labels=OPTION_NAMES, **overrides)
    except JaxError as exc:
        raise _fail(str(exc)) from None
    configure_logging(settings.log_level, json=settings.log_json, stream=sys.stderr)
    return settings


@contextmanager
def _errors() -> Iterator[None]:
    """Turn expected failures into one clear line and the documented exit code."""
    from jax_assistant.domain.errors import JaxError, UnavailableError

    try:
        yield
    except UnavailableError as exc:
        raise _fail(str(exc), 1) from None  # may work when retried: not the caller's input
    except JaxError as exc:  # every config, input and data family: the message names what is wrong
        raise _fail(str(exc)) from None
    except FileNotFoundError as exc:
        raise _fail(f"file not found: {exc.filename or exc}") from None
    except OSError as exc:
        raise _fail(f"{exc}", 1) from None
    except Exception as exc:
        from pydantic import ValidationError

        if not isinstance(exc, ValidationError):
            raise
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _fail(f"invalid {exc.title} {where}: {first['msg']}") from None


class _RateColumn(ProgressColumn):
    """Symbols per second once the engine is going (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.1f}/s" if task.speed else "", style="progress.data.speed")


class _OutcomeColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        failed, degraded = task.fields.get("failed", 0), task.fields.get("degraded", 0)
        text = Text()
        if failed:
            text.append(f"{failed} failed ", style="red")
        if degraded:
            text.append(f"{degraded} degraded", style="yellow")
        return text


def _progress(disable: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        _OutcomeColumn(),
        console=err,
        transient=True,
        # A live bar on a pipe or a log file is noise; only a terminal gets one.
        disable=disable or not err.is_terminal,
    )


class _RichProgress:
    """The engine's ProgressSink: a "loading data" phase until the engine starts, then per symbol."""

    def __init__(self, progress: Progress, banner: str | None = None) -> None:
        self.progress = progress
        self.banner = banner
        self.failed = 0
        self.degraded = 0
        self.task = progress.add_task("loading data", total=None, failed=0, degraded=0)

    def started(self, total: int) -> None:
        # Printed once the run has started, so a request that cannot start shows only its error line.
        if self.banner:
            err.print(f"[bold yellow]{escape(self.banner)}[/]", soft_wrap=True)
        self.progress.reset(self.task, total=total, description="symbols", failed=0, degraded=0)

    def symbol_done(self, result: SymbolResult) -> None:
        status = result.status.value
        self.failed += status == "failed"
        self.degraded += status == "degraded"
        self.progress.update(
            self.task,
            advance=1,
            description=f"{result.symbol:<10.10} {status}",
            failed=self.failed,
            degraded=self.degraded,
        )


def _run_async(
    coro_factory: Any, orch: Orchestrator, then: Callable[[RunOutcome], None] | None = None
) -> RunOutcome:
    """Run with Ctrl-C/SIGTERM handling: the first drains in-flight stages (exit 130), a second aborts.
    ``then(outcome)`` runs once the run returned, before the orchestrator closes (which waits for its
    background housekeeping: ``then`` overlaps it)."""

    async def main() -> RunOutcome:
        loop = asyncio.get_running_loop()
        presses = 0
        task = asyncio.current_task()

        def on_sigint() -> None:
            nonlocal presses
            presses += 1
            if presses == 1 and orch.engine is not None:
                err.print("[yellow]cancelling: finishing in-flight stages (Ctrl-C again to abort)[/]")
                orch.engine.cancel()
            elif task is not None:
                task.cancel()

        # engine: SIGTERM (a service manager stopping us) drains like the first Ctrl-C; a second one aborts.
        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-Unix loops have no signal handlers
            loop.add_signal_handler(signal.SIGINT, on_sigint)
            loop.add_signal_handler(signal.SIGTERM, on_sigint)
        try:
            async with orch:
                result: RunOutcome = await coro_factory()
                if then is not None:
                    then(result)
                return result
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise _fail("aborted", 130) from None


def _execute(
    orch: Orchestrator, settings: Settings, json_out: bool, coro: Any, *, show_all: bool = False
) -> None:
    from jax_assistant.engines.tuning import one_run_gc

    with one_run_gc():  # this process executes one run, then exits
        _execute_run(orch, settings, json_out, coro, show_all=show_all)


def _execute_run(
    orch: Orchestrator, settings: Settings, json_out: bool, coro: Any, *, show_all: bool = False
) -> None:
    banner = SIMULATED_BANNER if settings.provider == "sample" and not json_out else None
    progress = _progress(disable=json_out)

    def report(outcome: RunOutcome) -> None:
        progress.stop()  # the bar is gone before the report prints (stopping twice is a no-op)
        # The run's provider is cached by now: its sectors cost nothing.
        provider = orch.provider(outcome.run.params.get("provider"), outcome.run.params.get("dataPath"))
        _report(outcome, json_out, show_all=show_all, sector_of=provider.sector)

    # The report prints while the completed run's checkpoints are compacted on the writer thread.
    orch.background_compaction = True
    with _errors(), progress:
        outcome = _run_async(lambda: coro(_RichProgress(progress, banner)), orch, then=report)
    if outcome.run.status.value == "cancelled":
        err.print(f"resume with: jax run --resume {outcome.run.id}", soft_wrap=True, highlight=False)
        raise typer.Exit(130)


def _report(
    outcome: RunOutcome,
    json_out: bool,
    *,
    show_all: bool = False,
    sector_of: Callable[[str], str | None] | None = None,
) -> None:
    run = outcome.run
    if json_out:
        payload = {
            "run": run.to_contract(),
            "symbols": [r.to_contract() for r in outcome.results],
            "unknownSymbols": outcome.unknown_symbols,
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    if outcome.unknown_symbols:
        err.print(
            f"[yellow]skipped unknown symbol(s):[/] {escape(', '.join(outcome.unknown_symbols))}",
            soft_wrap=True,
        )
    from jax_assistant.cli_report import Report

    out.print(Report(run, outcome.results, show_all=show_all, sector_of=sector_of).renderable())


def _decision(risk: Any) -> str:
    c = risk.constraints
    if c.allowed:
        if c.adjustments:
            return "[green]allowed[/] [dim]clamped " + ",".join(escape(a.rule) for a in c.adjustments) + "[/]"
        return "[green]allowed[/]"
    return "[red]rejected[/] " + ",".join(escape(v.code) for v in c.violations)


def _read_watchlist(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot read watchlist {path}: {exc.strerror or exc}") from None
    symbols: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        symbols.extend(tok for tok in line.replace(",", " ").split() if tok)
    if not symbols:
        raise _fail(f"watchlist {path} holds no symbols")
    return symbols


# ---------------------------------------------------------------------------- jax run


@app.command()
def run(
    symbols: Annotated[
        list[str] | None, typer.Argument(help="symbols to scan (default: the watchlist)")
    ] = None,
    watchlist: Annotated[
        Path | None, typer.Option(help="file of symbols (one per line or comma separated)")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="csv file or folder (implies --provider csv)")] = None,
    provider: Annotated[str | None, typer.Option(help="sample | csv")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="replay date YYYY-MM-DD (default: latest)")
    ] = None,
    lookback: Annotated[
        int | None, typer.Option(min=1, help="sessions to scan for events (default 1)")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the run as JSON")] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="a row for every symbol, not only those with something to read")
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(help="resume an interrupted run by id (with its own inputs: no other run options)"),
    ] = None,
    skip_unknown: Annotated[
        bool, typer.Option("--skip-unknown", help="run the known symbols when some are unknown")
    ] = False,
    concurrency: Annotated[int | None, typer.Option(min=1, help="symbols in flight at once")] = None,
    account_size: Annotated[float | None, typer.Option(help="account size in USD")] = None,
    risk_percent: Annotated[float | None, typer.Option(help="risk per trade in percent")] = None,
    db: Annotated[str | None, typer.Option(help="database URL (default: SQLite file)")] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help="override a stage policy for this run: STAGE.FIELD=VALUE, e.g. persist.timeout_s=5, "
            "detect_events.retry.attempts=3, research.required=false (repeatable)",
        ),
    ] = None,
) -> None:
    """Scan symbols, detect events, generate setups, size them and store everything."""
    if resume:
        # A resumed run replays its stored inputs; silently ignoring new ones would mislead.
        given = {
            "SYMBOLS": bool(symbols),
            "--watchlist": watchlist is not None,
            "--data": data is not None,
            "--provider": provider is not None,
            "--as-of": as_of is not None,
            "--lookback": lookback is not None,
            "--account-size": account_size is not None,
            "--risk-percent": risk_percent is not None,
            "--policy": bool(policy),
            "--skip-unknown": skip_unknown,
        }
        clash = [name for name, present in given.items() if present]
        if clash:
            raise _fail(
                f"--resume {resume} runs with the inputs it was started with; drop {', '.join(clash)}"
            )
    if provider is not None and provider not in ("sample", "csv"):
        raise _fail(f"--provider must be 'sample' or 'csv', not {provider!r}")
    overrides: dict[str, Any] = {
        "provider": provider or ("csv" if data is not None else None),
        "data_path": data,
        "account_size": account_size,
        "risk_percent": risk_percent,
        "database_url": db,
    }
    early = data if not resume and provider in (None, "csv") and data is not None and data.is_file() else None
    if early is not None:
        # Read the bars on a thread while the rest of the run imports (its settings first: ~0.2 s of
        # the ~0.5 s read) and opens its database; the settings name the side files, read after them.
        from jax_assistant.marketdata.csv_provider import prefetch

        prefetch(early, sides=False)
    settings = _settings(**overrides)
    if concurrency:
        settings.engine.concurrency = concurrency
    if data is not None and not data.exists():
        raise _fail(f"--data {data}: no such file or folder")
    if not resume and settings.provider == "csv" and settings.data_path is not None:
        from jax_assistant.marketdata.csv_provider import prefetch, prefetch_sides

        earnings, sectors = settings.earnings_path, settings.sectors_path
        if early is not None and settings.data_path == early:
            prefetch_sides(settings.data_path, earnings_path=earnings, sectors_path=sectors)
        else:
            prefetch(settings.data_path, earnings_path=earnings, sectors_path=sectors)
    requested = list(symbols or [])
    if watchlist is not None:
        requested.extend(_read_watchlist(watchlist))
    as_of_date = _parse_date(as_of)
    from jax_assistant.orchestrator import RunRequest

    orch = _run_orchestrator(settings)
    if resume:
        _execute(orch, settings, json_out, lambda p: orch.resume_run(resume, progress=p), show_all=show_all)
        return
    request = RunRequest(
        symbols=requested,
        as_of=as_of_date,
        lookback=lookback,
        stage_overrides=_parse_policies(policy or []),
        skip_unknown=skip_unknown,
    )
    _execute(orch, settings, json_out, lambda p: orch.start_run(request, progress=p), show_all=show_all)


def _run_orchestrator(settings: Settings) -> Orchestrator:
    """The orchestrator of a command that executes a run. Without Prometheus metrics: the process ends
    with the command and nothing scrapes it, so they would be counted for no one (and their import and
    per-stage observations cost the run ~0.03 s)."""
    from jax_assistant.observability.metrics import NullMetrics
    from jax_assistant.orchestrator import Orchestrator

    return Orchestrator(settings, metrics=NullMetrics())


def _parse_policies(specs: Sequence[str]) -> dict[str, dict[str, Any]] | None:
    """``["persist.timeout_s=5", "persist.retry.attempts=3"]`` -> a nested per-stage override dict."""
    overrides: dict[str, dict[str, Any]] = {}
    for spec in specs:
        path, sep, raw = spec.partition("=")
        parts = path.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise _fail(f"--policy {spec!r}: expected STAGE.FIELD=VALUE, e.g. persist.timeout_s=5")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string such as a breaker key
        node = overrides.setdefault(parts[0], {})
        for key in parts[1:-1]:
            node = node.setdefault(key, {})
        node[parts[-1]] = value
    return overrides or None


# ---------------------------------------------------------------------------- runs / trades


def _with_orch(db: str | None, fn: Any) -> Any:
    settings = _settings(database_url=db)
    from jax_assistant.orchestrator import Orchestrator

    async def main() -> Any:
        async with Orchestrator(settings) as orch:
            return await fn(orch)

    with _errors():
        return asyncio.run(main())


@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option(min=1)] = 20,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    db: Annotated[str | None, typer.Option()] = None,
) -> None:
    """The latest runs, newest first."""
    runs: list[Run] = _with_orch(db, lambda o: o.repository.list_runs(limit=limit))
    if json_out:
        sys.stdout.write(json.dumps([r.to_contract() for r in runs], indent=2) + "\n")
        return
    table = Table(
        title="Runs", title_justify="left", box=None, padding=(0, 1, 0, 0), header_style="bold underline"
    )
    # Fits 80 columns with the full run id (the argument of `runs show` and `--resume`; it also says
    # when the run started), never folded.
    for col in ("run id", "as of", "provider", "syms", "ok/dg/fl/cn", "status"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("syms", "ok/dg/fl/cn") else "left")
    for r in runs:
        c = r.counts
        outcomes = "/".join(str(c.get(k, 0)) for k in ("succeeded", "degraded", "failed", "cancelled"))
        table.add_row(
            r.id,
            str(r.as_of),
            escape(r.provider) + ("[yellow]*[/]" if r.simulated else ""),
            str(len(r.symbols)),
            outcomes,
            f"[{STATUS_STYLE.get(r.status.value, 'white')}]{escape(r.status.value)}[/]",
        )
    out.print(table)
    if any(r.simulated for r in runs):
        out.print("[yellow]*[/] simulated market data (the bundled sample)")
    for r in runs:
        _print_interrupted_hint(r)


def _print_interrupted_hint(run: Run) -> None:
    from jax_assistant.domain import RunStatus

    if run.status is RunStatus.INTERRUPTED:
        out.print(
            f"[yellow]{run.id} was interrupted (its process stopped); resume it with:[/]"
            f" jax run --resume {run.id}"
        )


@runs_app.command("show")
def runs_show(
    run_id: str,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="a row for every symbol")] = False,
    db: Annotated[str | None, typer.Option()] = None,
) -> None:
    """One run with its per-symbol results."""

    async def fetch(o: Orchestrator) -> tuple[Run | None, list[SymbolResult]]:
        assert o.repository is not None
        r = await o.repository.get_run(run_id)
        return r, (await o.repository.get_symbol_results(run_id) if r else [])

    found, results = _with_orch(db, fetch)
    if found is None:
        raise _fail(f"no run {run_id!r} (see `jax runs list`)")
    from jax_assistant.orchestrator import RunOutcome

    outcome = RunOutcome(found, results, [])
    if json_out:
        _report(outcome, True)
        return
    _report(outcome, False, show_all=show_all)
    _print_interrupted_hint(found)
    for r in results:
        for issue in r.data_issues:
            out.print(f"[dim]data: {escape(r.symbol)}: {escape(issue)}[/]", soft_wrap=True)


@trades_app.command("list")
def trades_list(
    symbol: Annotated[str | None, typer.Option(help="only this symbol")] = None,
    strategy: Annotated[str | None, typer.Option(help="only this strategy id")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    db: Annotated[str | None, typer.Option()] = None,
    run_id: Annotated[
        str | None, typer.Option("--run", help="only this run's setups, with this run's own decisions")
    ] = None,
) -> None:
    """Stored trade setups with their risk decision, newest first."""
    from jax_assistant.learning.outcomes import with_outcome

    async def fetch(o: Orchestrator) -> tuple[list[Any], dict[str, dict[str, Any]]]:
        assert o.repository is not None
        found = await o.repository.list_trades(
            symbol=symbol.upper() if symbol else None, strategy_id=strategy, limit=limit, run_id=run_id
        )
        return found, await o.repository.outcomes_for(t.setup.id for t in found)  # settled ones

    trades, settled = _with_orch(db, fetch)
    if json_out:
        rows = [with_outcome(t.to_contract(), settled.get(t.setup.id)) for t in trades]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title="Trades")
    for col in (
        "setup id",
        "symbol",
        "strategy",
        "dir",
        "entry",
        "stop",
        "targets",
        "size",
        "risk $",
        "decision",
        "outcome",
    ):
        table.add_column(col)
    for t in trades:
        s = t.setup
        table.add_row(
            escape(s.id),
            escape(s.symbol),
            escape(s.strategy_id),
            s.direction.value,
            f"{s.entry:.2f}",
            f"{s.stop:.2f}",
            ", ".join(f"{x:.2f}" for x in s.targets),
            str(t.risk.position_size),
            f"{t.risk.total_risk:,.2f}",
            _decision(t.risk),
            _outcome_cell(settled.get(s.id)),
        )
    out.print(table)


def _outcome_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "[dim]open[/]"
    return f"{row['status']} {row['r_multiple']:+.2f}R"


# ---------------------------------------------------------------------------- dead letters


@dlq_app.command("list")
def dlq_list(
    run_id: Annotated[str | None, typer.Option("--run", help="only this run")] = None,
    status: Annotated[str, typer.Option(help="open | retried | resolved | all")] = "open",
    json_out: Annotated[bool, typer.Option("--json")] = False,
    db: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Symbols that failed a required stage, with the error and what is needed to retry them."""
    letters = _with_orch(
        db,
        lambda o: o.repository.list_dead_letters(run_id=run_id, status=None if status == "all" else status),
    )
    if json_out:
        sys.stdout.write(json.dumps([d.model_dump(mode="json") for d in letters], indent=2) + "\n")
        return
    table = Table(title="Dead letters")
    for col in ("id", "run", "symbol", "stage", "attempts", "status", "error"):
        table.add_column(col)
    for d in letters:
        table.add_row(
            str(d.id),
            d.run_id,
            escape(d.symbol),
            escape(d.stage),
            str(d.attempts),
            d.status,
            escape(d.error[:100]),
        )
    out.print(table)


@dlq_app.command("retry")
def dlq_retry(
    ids: Annotated[list[int] | None, typer.Argument(help="dead-letter ids")] = None,
    run_id: Annotated[
        str | None, typer.Option("--run", help="retry every open dead letter of this run")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    db: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Re-run dead-lettered symbols from the stage that failed, as a new run."""
    if not ids and not run_id:
        raise _fail("give dead-letter ids or --run RUN_ID")
    settings = _settings(database_url=db)
    orch = _run_orchestrator(settings)
    _execute(
        orch, settings, json_out, lambda p: orch.retry_dead_letters(ids or [], run_id=run_id, progress=p)
    )


# ---------------------------------------------------------------------------- stages & data


@app.command()
def stages(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The configured pipeline and every stage available (built-in and plugins)."""
    from jax_assistant.orchestrator import Orchestrator
    from jax_assistant.pipeline.plugins import describe, discover_stage_factories

    settings = _settings()
    with _errors():
        pipeline = Orchestrator(settings).stages()
        available = sorted(discover_stage_factories())
    rows = describe(pipeline)
    if json_out:
        sys.stdout.write(json.dumps({"pipeline": rows, "available": available}, indent=2) + "\n")
        return
    table = Table(title="Pipeline")
    for col in (
        "#",
        "stage",
        "required",
        "timeout s",
        "attempts",
        "after",
        "breaker",
        "rate limit",
        "bulkhead",
    ):
        table.add_column(col)
    for i, r in enumerate(rows, 1):
        table.add_row(
            str(i),
            escape(r["name"]),
            "yes" if r["required"] else "optional",
            str(r["timeout_s"]),
            str(r["attempts"]),
            ", ".join(r["after"]) or "-",
            r["breaker"] or "-",
            r["rate_limit"] or "-",
            r["bulkhead"] or "-",
        )
    out.print(table)
    out.print(f"available stages: {escape(', '.join(available))}")


ACTION_SEVERITY = {"symbol skipped": 0, "row skipped": 1}


@data_app.command("check")
def data_check(
    data: Annotated[
        Path | None, typer.Option(help="csv file or folder (default: configured provider)")
    ] = None,
    symbols: Annotated[list[str] | None, typer.Argument()] = None,
    rule: Annotated[str | None, typer.Option(help="only this rule, e.g. duplicate_date")] = None,
    limit: Annotated[int, typer.Option(min=0, help="detail rows to show")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="print the totals and issues as JSON")] = False,
) -> None:
    """Report the data problems found (and skipped): totals per rule, worst first, then per symbol."""
    settings = _settings(provider="csv" if data else None, data_path=data)
    from jax_assistant.marketdata.base import MarketDataError
    from jax_assistant.orchestrator import Orchestrator

    orch = Orchestrator(settings)
    with _errors():
        provider = orch.provider()
        wanted = [s.upper() for s in symbols] if symbols else provider.symbols()
        issues = []
        bad: dict[str, str] = {}
        for sym in wanted:
            try:
                provider.bars(sym)
            except MarketDataError as exc:
                bad[sym] = str(exc)
            issues.extend(provider.issues(sym))
    found_rules = sorted({i.rule for i in issues})
    if rule is not None:
        issues = [i for i in issues if i.rule == rule]
    per_rule: dict[str, dict[str, Any]] = {}
    per_symbol: Counter[tuple[str, str, str]] = Counter()
    for i in issues:
        entry = per_rule.setdefault(i.rule, {"rule": i.rule, "count": 0, "symbols": set(), "actions": set()})
        entry["count"] += 1
        entry["symbols"].add(i.symbol)
        entry["actions"].add(i.action)
        per_symbol[(i.symbol, i.rule, i.action)] += 1
    # Worst first: rules that drop data (symbols, then rows) before those only reported; then by count.
    totals = sorted(
        per_rule.values(),
        key=lambda e: (min(ACTION_SEVERITY.get(a, 2) for a in e["actions"]), -e["count"], e["rule"]),
    )
    if json_out:
        payload = {
            "symbols": len(wanted),
            "issues": len(issues),
            "rule": rule,
            "rules": [{**e, "symbols": len(e["symbols"]), "actions": sorted(e["actions"])} for e in totals],
            "unusable": [{"symbol": s, "error": m} for s, m in bad.items()],
            "details": [
                {
                    "symbol": i.symbol,
                    "date": i.date.isoformat() if i.date else None,
                    "rule": i.rule,
                    "detail": i.detail,
                    "action": i.action,
                }
                for i in issues
            ],
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    scope = f" for rule {escape(rule)}" if rule else ""
    overview = Table(
        title=f"Data issues{scope}: {len(issues)} found in {len(wanted)} symbols", title_justify="left"
    )
    for col in ("rule", "issues", "symbols", "action"):
        overview.add_column(col, justify="right" if col in ("issues", "symbols") else "left", no_wrap=True)
    for e in totals:
        overview.add_row(
            escape(e["rule"]), str(e["count"]), str(len(e["symbols"])), ", ".join(sorted(e["actions"]))
        )
    out.print(overview)
    if rule is not None and not issues:
        out.print(
            f"no issue breaks rule {escape(rule)!r}; rules found: {escape(', '.join(found_rules)) or 'none'}"
        )
    if per_symbol and limit > 0:
        worst = per_symbol.most_common(limit)
        by_symbol = Table(title=f"Worst {len(worst)} symbol/rule pairs", title_justify="left")
        for col in ("symbol", "rule", "issues", "action"):
            by_symbol.add_column(col, justify="right" if col == "issues" else "left", no_wrap=True)
        for (sym, r, action), n in worst:
            by_symbol.add_row(escape(sym), escape(r), str(n), escape(action))
        out.print(by_symbol)
        details = Table(title=f"First {min(limit, len(issues))} issues", title_justify="left")
        for col in ("symbol", "date", "rule", "detail", "action"):
            details.add_column(col, overflow="fold" if col == "detail" else "ellipsis")
        for i in issues[:limit]:
            details.add_row(
                escape(i.symbol), str(i.date or "-"), escape(i.rule), escape(i.detail), escape(i.action)
            )
        out.print(details)
    for sym, message in bad.items():
        out.print(f"[red]unusable:[/] {escape(sym)}: {escape(message)}")


# ---------------------------------------------------------------------------- the database

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def _parse_age(value: str) -> float:
    """``30d``, ``12h``, ``2w``, ``90m``, ``45s`` (or bare days) -> seconds."""
    raw = value.strip().lower()
    unit = raw[-1] if raw and raw[-1] in _DURATION_UNITS else "d"
    number = raw[:-1] if raw and raw[-1] in _DURATION_UNITS else raw
    try:
        amount = float(number)
    except ValueError:
        raise _fail(f"--older-than {value!r}: use a number and a unit (s, m, h, d, w), e.g. 30d") from None
    if amount <= 0:
        raise _fail(f"--older-than {value!r} must be positive")
    return amount * _DURATION_UNITS[unit]


@db_app.command("init")
def db_init(
    db: Annotated[str | None, typer.Option(help="database URL (default: SQLite file)")] = None,
) -> None:
    """Create the database (SQLite) or bring its schema to the newest revision. Safe to re-run."""
    from jax_assistant.storage.db import DatabaseMissingError, init_database

    settings = _settings(database_url=db)
    try:
        url, before, after = asyncio.run(init_database(settings.database_url))
    except DatabaseMissingError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot reach the database: {exc}", 1) from None
    if before == after:
        out.print(f"{url}: schema up to date ({after})")
    else:
        out.print(f"{url}: migrated {before or 'empty database'} -> {after}")


@db_app.command("prune")
def db_prune(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="age, e.g. 30d, 12h (default: storage.retention_days)"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    db: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Delete finished (or interrupted) runs and audit rows older than the age, with what they stored.

    A run still executing (live lease) is never removed, however old.
    """
    from datetime import timedelta

    from jax_assistant.domain import utc_now
    from jax_assistant.orchestrator import Orchestrator

    settings = _settings(database_url=db)
    seconds = _parse_age(older_than) if older_than else settings.storage.retention_days * 86_400
    cutoff = utc_now() - timedelta(seconds=seconds)

    async def main() -> dict[str, int]:
        async with Orchestrator(settings) as orch:
            assert orch.repository is not None
            return (await orch.repository.prune(cutoff)).as_dict()

    with _errors():
        removed = asyncio.run(main())
    if json_out:
        sys.stdout.write(json.dumps({"before": cutoff.isoformat(), "removed": removed}, indent=2) + "\n")
        return
    table = Table(title=f"Pruned (older than {cutoff:%Y-%m-%d %H:%M:%S} UTC)")
    table.add_column("table")
    table.add_column("rows removed", justify="right")
    for name, count in removed.items():
        table.add_row(name, str(count))
    out.print(table)


# ---------------------------------------------------------------------------- the HTTP service


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind (0.0.0.0 for every interface)")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            min=1, max=65535, envvar=["JAX_PORT", "PORT"], help="TCP port (env JAX_PORT, then PORT)"
        ),
    ] = 8091,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="do not resume runs a stopped service left running")
    ] = False,
    db: Annotated[str | None, typer.Option(help="database URL (default: SQLite file)")] = None,
) -> None:
    """Run the orchestrator's HTTP API (see docs/api.md)."""
    import uvicorn

    from jax_assistant.api import create_app
    from jax_assistant.api.server import ServingServer
    from jax_assistant.observability.logging import configure_logging

    settings = _settings(database_url=db)
    if "executor" not in settings.api.model_fields_set:
        # A service executes runs in the niced executor process unless configured otherwise: inline
        # runs share the event loop with requests (accept p99 > 100 ms while runs execute).
        settings.api.executor = "process"
    # The CLI default (WARNING) keeps run output clean; a service should log what it does.
    level = settings.log_level if "log_level" in settings.model_fields_set else "INFO"
    # background: records are rendered and written by a thread, never on the event loop.
    configure_logging(level, json=settings.log_json, stream=sys.stderr, background=True)
    from jax_assistant.orchestrator import Orchestrator

    async def preflight() -> None:
        # The service opens (and migrates) the database in its lifespan, where a failure becomes a
        # uvicorn traceback; opening it once here first turns it into the usual one-line error.
        async with Orchestrator(settings):
            pass

    with _errors():
        asyncio.run(preflight())
        application = create_app(settings, resume_on_startup=not no_resume)
    err.print(f"jax-orchestrator listening on http://{host}:{port}")
    # log_config=None: uvicorn's loggers go through our structlog setup instead of its own handlers.
    from jax_assistant.service.server import header_deadline_protocol

    # access_log=False: uvicorn's line carries the query string; ours (api.access_log) does not.
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        log_config=None,
        timeout_graceful_shutdown=10,
        access_log=False,
        http=header_deadline_protocol(settings.api.header_timeout_s),
    )
    # Start-up resume waits until the port is bound: a service whose port is taken touches no run.
    server = ServingServer(config)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C/SIGINT is a clean stop
        server.run()
    if not server.started:
        raise typer.Exit(3)  # uvicorn's start-up failure code (e.g. the port is taken)


def main() -> None:  # pragma: no cover - console-script convenience
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
