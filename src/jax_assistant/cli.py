"""The ``jax`` command line (Typer + rich).

Progress and tables go to stderr/stdout for people; ``--json`` prints only the machine-readable result
on stdout. Exit codes: 0 the run ran (symbols may still have failed: see the table), 2 bad input (unknown
symbols, bad dates, unreadable files, bad config), 1 the run could not start for another reason, 130
cancelled with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jax_assistant.config import Settings, load_settings
from jax_assistant.domain import Run, RunStatus, SymbolResult
from jax_assistant.engines.local import tune_gc_for_runs
from jax_assistant.marketdata.base import MarketDataError
from jax_assistant.observability.logging import configure_logging
from jax_assistant.orchestrator import Orchestrator, RunError, RunOutcome, RunRequest
from jax_assistant.pipeline.plugins import PipelineConfigError, describe, discover_stage_factories

app = typer.Typer(
    help="jax-assistant: scan markets, detect events, size trades, keep running.", no_args_is_help=True
)
runs_app = typer.Typer(help="Inspect stored runs.", no_args_is_help=True)
trades_app = typer.Typer(help="Inspect stored trade setups with their risk decision.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-lettered symbols: list and retry.", no_args_is_help=True)
data_app = typer.Typer(help="Market data checks.", no_args_is_help=True)
db_app = typer.Typer(help="The database: create or migrate it, prune old runs.", no_args_is_help=True)


@app.callback()
def _process_setup() -> None:
    """jax-assistant: scan markets, detect events, size trades, keep running."""
    tune_gc_for_runs()


app.add_typer(runs_app, name="runs")
app.add_typer(trades_app, name="trades")
app.add_typer(dlq_app, name="dlq")
app.add_typer(data_app, name="data")
app.add_typer(db_app, name="db")

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
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _parse_date(value: str | None, option: str = "--as-of") -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail(f"{option} {value!r} is not a date: use YYYY-MM-DD, e.g. 2017-11-10") from None


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _fail(f"bad setting {where}: {first['msg']}") from None
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from None
    configure_logging(settings.log_level, json=settings.log_json, stream=sys.stderr)
    return settings


@contextmanager
def _errors() -> Iterator[None]:
    """Turn expected failures into one clear line and the documented exit code."""
    try:
        yield
    except (RunError, MarketDataError, PipelineConfigError) as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _fail(f"invalid {exc.title} {where}: {first['msg']}") from None
    except FileNotFoundError as exc:
        raise _fail(f"file not found: {exc.filename or exc}") from None
    except OSError as exc:
        raise _fail(f"{exc}", 1) from None


class _RichProgress:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("symbols", total=None)

    def started(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    def symbol_done(self, result: SymbolResult) -> None:
        self.progress.update(self.task, advance=1, description=f"{result.symbol:<10} {result.status.value}")


def _run_async(coro_factory: Any, orch: Orchestrator) -> RunOutcome:
    """Run with Ctrl-C handling: first press drains in-flight stages, second aborts."""

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

        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-Unix loops have no signal handlers
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            async with orch:
                result: RunOutcome = await coro_factory()
                return result
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise _fail("aborted", 130) from None


def _execute(orch: Orchestrator, settings: Settings, json_out: bool, coro: Any) -> None:
    provider_simulated = settings.provider == "sample"
    if provider_simulated and not json_out:
        err.print(f"[bold yellow]{SIMULATED_BANNER}[/]")
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=json_out,
    )
    with _errors(), progress:
        outcome = _run_async(lambda: coro(_RichProgress(progress)), orch)
    _report(outcome, json_out)
    if outcome.run.status.value == "cancelled":
        raise typer.Exit(130)


def _report(outcome: RunOutcome, json_out: bool) -> None:
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
        err.print(f"[yellow]skipped unknown symbol(s):[/] {', '.join(outcome.unknown_symbols)}")
    out.print(_symbols_table(run, outcome.results))
    _print_counts(run)


def _symbols_table(run: Run, results: Sequence[SymbolResult]) -> Table:
    """One row per trade setup (a symbol with none gets one row), the way a trader scans a blotter."""
    title = f"Run {run.id} - as of {run.as_of} - {run.provider}"
    if run.simulated:
        title += " [bold yellow](SIMULATED DATA)[/]"
    table = Table(title=title, title_justify="left")
    table.add_column("symbol", no_wrap=True)
    table.add_column("events")
    table.add_column("setup")
    table.add_column("entry/stop", justify="right", no_wrap=True)
    table.add_column("size", justify="right")
    table.add_column("risk $", justify="right")
    table.add_column("decision", overflow="fold")
    table.add_column("status", no_wrap=True)
    for r in results:
        events = ", ".join(EVENT_ABBREV.get(t, t) for t in sorted({e.type for e in r.events})) or "-"
        status = f"[{STATUS_STYLE.get(r.status.value, 'white')}]{r.status.value}[/]"
        if not r.trades:
            note = f"[dim]{r.error}[/]" if r.error else "-"
            table.add_row(r.symbol, events, note, "", "", "", "", status)
            continue
        for i, t in enumerate(r.trades):
            s = t.setup
            table.add_row(
                r.symbol if i == 0 else "",
                events if i == 0 else "",
                f"{s.strategy_id} {s.direction.value}",
                f"{s.entry:,.2f}/{s.stop:,.2f}",
                str(t.risk.position_size),
                f"{t.risk.total_risk:,.0f}",
                _decision(t.risk),
                status if i == 0 else "",
            )
    return table


EVENT_ABBREV = {
    "earnings_surprise": "earnings",
    "gap_open": "gap",
    "volume_spike": "volume",
    "volatility_spike": "volatility",
}


def _decision(risk: Any) -> str:
    c = risk.constraints
    if c.allowed:
        if c.adjustments:
            return (
                "[green]allowed[/] [dim]clamped "
                + ",".join(_short_rule(a.rule) for a in c.adjustments)
                + "[/]"
            )
        return "[green]allowed[/]"
    return "[red]rejected[/] " + ",".join(v.code for v in c.violations)


def _short_rule(rule: str) -> str:
    return rule.removeprefix("max_").replace("_per_trade", "").replace("_exposure", "")


def _print_counts(run: Run) -> None:
    c = run.counts
    parts = [
        f"{c.get('symbols', 0)} symbols",
        f"[green]{c.get('succeeded', 0)} succeeded[/]",
        f"[yellow]{c.get('degraded', 0)} degraded[/]",
        f"[red]{c.get('failed', 0)} failed[/]",
        f"[magenta]{c.get('cancelled', 0)} cancelled[/]",
        f"{c.get('events', 0)} events",
        f"{c.get('setups', 0)} setups ({c.get('allowed', 0)} allowed)",
    ]
    out.print(" | ".join(parts))
    if c.get("failed"):
        out.print("[dim]failed symbols are in the dead-letter queue: `jax dlq list`[/]")


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
    resume: Annotated[str | None, typer.Option(help="resume an interrupted run by id")] = None,
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
    if provider is not None and provider not in ("sample", "csv"):
        raise _fail(f"--provider must be 'sample' or 'csv', not {provider!r}")
    overrides: dict[str, Any] = {
        "provider": provider or ("csv" if data is not None else None),
        "data_path": data,
        "account_size": account_size,
        "risk_percent": risk_percent,
        "database_url": db,
    }
    settings = _settings(**overrides)
    if concurrency:
        settings.engine.concurrency = concurrency
    if data is not None and not data.exists():
        raise _fail(f"--data {data}: no such file or folder")
    requested = list(symbols or [])
    if watchlist is not None:
        requested.extend(_read_watchlist(watchlist))
    as_of_date = _parse_date(as_of)
    orch = Orchestrator(settings)
    if resume:
        _execute(orch, settings, json_out, lambda p: orch.resume_run(resume, progress=p))
        return
    request = RunRequest(
        symbols=requested, as_of=as_of_date, lookback=lookback, stage_overrides=_parse_policies(policy or [])
    )
    _execute(orch, settings, json_out, lambda p: orch.start_run(request, progress=p))


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
    table = Table(title="Runs")
    for col in (
        "run id",
        "started",
        "as of",
        "provider",
        "symbols",
        "ok",
        "degraded",
        "failed",
        "cancelled",
        "status",
    ):
        table.add_column(col)
    for r in runs:
        c = r.counts
        provider = r.provider + (" [yellow](simulated)[/]" if r.simulated else "")
        table.add_row(
            r.id,
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            str(r.as_of),
            provider,
            str(len(r.symbols)),
            str(c.get("succeeded", 0)),
            str(c.get("degraded", 0)),
            str(c.get("failed", 0)),
            str(c.get("cancelled", 0)),
            f"[{STATUS_STYLE.get(r.status.value, 'white')}]{r.status.value}[/]",
        )
    out.print(table)
    for r in runs:
        _print_interrupted_hint(r)


def _print_interrupted_hint(run: Run) -> None:
    if run.status is RunStatus.INTERRUPTED:
        out.print(
            f"[yellow]{run.id} was interrupted (its process stopped); resume it with:[/]"
            f" jax run --resume {run.id}"
        )


@runs_app.command("show")
def runs_show(
    run_id: str,
    json_out: Annotated[bool, typer.Option("--json")] = False,
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
    outcome = RunOutcome(found, results, [])
    if json_out:
        _report(outcome, True)
        return
    out.print(_symbols_table(found, results))
    _print_counts(found)
    _print_interrupted_hint(found)
    for r in results:
        for issue in r.data_issues:
            out.print(f"[dim]data: {issue}[/]")


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
    trades = _with_orch(
        db,
        lambda o: o.repository.list_trades(
            symbol=symbol.upper() if symbol else None, strategy_id=strategy, limit=limit, run_id=run_id
        ),
    )
    if json_out:
        sys.stdout.write(json.dumps([t.to_contract() for t in trades], indent=2) + "\n")
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
    ):
        table.add_column(col)
    for t in trades:
        s = t.setup
        table.add_row(
            s.id,
            s.symbol,
            s.strategy_id,
            s.direction.value,
            f"{s.entry:.2f}",
            f"{s.stop:.2f}",
            ", ".join(f"{x:.2f}" for x in s.targets),
            str(t.risk.position_size),
            f"{t.risk.total_risk:,.2f}",
            _decision(t.risk),
        )
    out.print(table)


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
        table.add_row(str(d.id), d.run_id, d.symbol, d.stage, str(d.attempts), d.status, d.error[:100])
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
    orch = Orchestrator(settings)
    _execute(
        orch, settings, json_out, lambda p: orch.retry_dead_letters(ids or [], run_id=run_id, progress=p)
    )


# ---------------------------------------------------------------------------- stages & data


@app.command()
def stages(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The configured pipeline and every stage available (built-in and plugins)."""
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
            r["name"],
            "yes" if r["required"] else "optional",
            str(r["timeout_s"]),
            str(r["attempts"]),
            ", ".join(r["after"]) or "-",
            r["breaker"] or "-",
            r["rate_limit"] or "-",
            r["bulkhead"] or "-",
        )
    out.print(table)
    out.print(f"available stages: {', '.join(available)}")


@data_app.command("check")
def data_check(
    data: Annotated[
        Path | None, typer.Option(help="csv file or folder (default: configured provider)")
    ] = None,
    symbols: Annotated[list[str] | None, typer.Argument()] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 50,
) -> None:
    """Report the data problems found (and skipped) per symbol."""
    settings = _settings(provider="csv" if data else None, data_path=data)
    orch = Orchestrator(settings)
    with _errors():
        provider = orch.provider()
        wanted = [s.upper() for s in symbols] if symbols else provider.symbols()
        issues = []
        bad: list[str] = []
        for sym in wanted:
            try:
                provider.bars(sym)
            except MarketDataError as exc:
                bad.append(f"{sym}: {exc}")
            issues.extend(provider.issues(sym))
    summary: dict[tuple[str, str, str], int] = {}
    for i in issues:
        key = (i.symbol, i.rule, i.action)
        summary[key] = summary.get(key, 0) + 1
    overview = Table(title=f"Data issues: {len(issues)} found in {len(wanted)} symbols")
    for col in ("symbol", "rule", "count", "action"):
        overview.add_column(col, justify="right" if col == "count" else "left")
    for (sym, rule, action), n in sorted(summary.items()):
        overview.add_row(sym, rule, str(n), action)
    out.print(overview)
    if issues and limit > 0:
        details = Table(title=f"First {min(limit, len(issues))} issues")
        for col in ("symbol", "date", "rule", "detail", "action"):
            details.add_column(col)
        for i in issues[:limit]:
            details.add_row(i.symbol, str(i.date or "-"), i.rule, i.detail, i.action)
        out.print(details)
    for line in bad:
        out.print(f"[red]unusable:[/] {line}")


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

    settings = _settings(database_url=db)
    if "log_level" not in settings.model_fields_set:
        # The CLI default (WARNING) keeps run output clean; a service should log what it does.
        configure_logging("INFO", json=settings.log_json, stream=sys.stderr)
    with _errors():
        application = create_app(settings, resume_on_startup=not no_resume)
    err.print(f"jax-orchestrator listening on http://{host}:{port}")
    # log_config=None: uvicorn's loggers go through our structlog setup instead of its own handlers.
    config = uvicorn.Config(application, host=host, port=port, log_config=None, timeout_graceful_shutdown=10)
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
