"""``jax replay`` and ``jax reflect`` (registered on the main app by ``cli.py``)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from jax_assistant.config import Settings
    from jax_assistant.learning.replay import ReplayResult
    from jax_assistant.learning.report import ReplayReport
    from jax_assistant.storage import Repository


def _cli() -> Any:
    from jax_assistant import cli  # the shared helpers (_settings, _errors, _fail, consoles)

    return cli


def _date(value: str, option: str) -> date:
    parsed: date | None = _cli()._parse_date(value, option)
    assert parsed is not None
    return parsed


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
    app.command("reflect")(reflect)


def replay(
    start: Annotated[str, typer.Option("--from", help="first session YYYY-MM-DD")],
    end: Annotated[str, typer.Option("--to", help="last session YYYY-MM-DD")],
    symbols: Annotated[
        list[str] | None, typer.Argument(help="symbols (default: the watchlist, else all)")
    ] = None,
    watchlist: Annotated[Path | None, typer.Option(help="file of symbols")] = None,
    compare_static: Annotated[
        bool, typer.Option("--compare-static", help="also run the same period with learning off")
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="write a self-contained HTML report")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="ignore a checkpoint of the same replay")] = False,
    state_dir: Annotated[
        Path | None, typer.Option(help="checkpoints and reports (default: data dir)")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="csv file or folder (implies --provider csv)")] = None,
    provider: Annotated[str | None, typer.Option(help="sample | csv")] = None,
    db: Annotated[str | None, typer.Option(help="database URL (default: SQLite file)")] = None,
    stop_after: Annotated[int | None, typer.Option(hidden=True, min=1)] = None,
) -> None:
    """Walk real history day by day: decide, settle outcomes, reflect; resumes after a kill."""
    cli = _cli()
    first, last = _date(start, "--from"), _date(end, "--to")
    if last < first:
        raise cli._fail(f"--to {last.isoformat()} is before --from {first.isoformat()}")
    overrides: dict[str, Any] = {"database_url": db}
    if data is not None:
        overrides.update(data_path=data, provider=provider or "csv")
    elif provider is not None:
        overrides["provider"] = provider
    settings = cli._settings(**overrides)
    requested = list(symbols or [])
    if watchlist is not None:
        requested.extend(cli._read_watchlist(watchlist))
    with cli._errors():
        result = asyncio.run(
            _replay(settings, requested, first, last, compare_static, state_dir, fresh, stop_after, json_out)
        )
    from jax_assistant.learning.report import build_report, render_html

    rep = build_report(result)
    folder = _state_dir(settings, state_dir)
    (folder / f"{rep.key}.report.json").write_text(rep.model_dump_json(indent=2), encoding="utf-8")
    if report is not None:
        report.write_text(render_html(rep), encoding="utf-8")
    if json_out:
        sys.stdout.write(rep.model_dump_json(indent=2) + "\n")
        return
    _print_report(rep, result)
    if report is not None:
        cli.out.print(f"report: {escape(str(report))}")


def _state_dir(settings: Settings, given: Path | None) -> Path:
    from jax_assistant.storage.db import _data_dir

    folder = given or (Path(settings.data_dir).expanduser() if settings.data_dir else _data_dir()) / "replays"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def _replay(
    settings: Settings,
    requested: list[str],
    first: date,
    last: date,
    compare_static: bool,
    state_dir: Path | None,
    fresh: bool,
    stop_after: int | None,
    quiet: bool,
) -> ReplayResult:
    from jax_assistant.domain.errors import InputError
    from jax_assistant.learning.replay import Replayer, ReplayParams
    from jax_assistant.orchestrator import Orchestrator, unknown_symbols_message
    from jax_assistant.risk import load_risk_constraints
    from jax_assistant.strategies import StrategyRegistry

    cli = _cli()
    async with Orchestrator(settings) as orch:
        source = orch.provider()
        known, unknown = orch.resolve_symbols(source, requested)
        if unknown:
            raise InputError(unknown_symbols_message(unknown, source), field="symbols", rule="known_symbol")
        cfg = settings.learning
        params = ReplayParams(
            start=first,
            end=min(last, source.latest_date()),
            symbols=known,
            compare_static=compare_static,
            reflect_every=cfg.replay_reflect_every,
            window_days=cfg.window_days,
            account_size=settings.account_size,
            risk_percent=settings.risk_percent,
            outcome=cfg.outcomes,
            weighting=cfg.weighting,
        )
        folder = _state_dir(settings, state_dir)
        if fresh:
            (folder / f"{params.key()}.json").unlink(missing_ok=True)
        replayer = Replayer(
            source,
            params,
            detectors=settings.detectors,
            constraints=load_risk_constraints(settings.risk_constraints_path),
            registry_factory=lambda: StrategyRegistry.default(settings.strategies_dir, settings.strategies),
            state_dir=folder,
            stop_after=stop_after,
        )
        with cli._progress(quiet) as bar:
            task = bar.add_task("replay", total=None, failed=0, degraded=0)

            def tick(done: int, total: int, day: date) -> None:
                bar.update(task, completed=done, total=total, description=f"replay {day.isoformat()}")

            result = await asyncio.to_thread(replayer.run, tick)
        assert orch.repository is not None
        await _store(orch.repository, result)
        return result


async def _store(repo: Repository, result: ReplayResult) -> None:
    """The learning arm's trades, their outcomes and one audit record per reflection (idempotent:
    setups by id, outcomes by setup id, audit rows by key), so a resumed replay stores nothing twice."""
    from jax_assistant.domain import AuditEvent
    from jax_assistant.learning.outcomes import outcome_row

    key = result.params.key()
    records = result.records["learning"]
    await repo.save_trades(records, run_id=key, simulated=False)
    rows = []
    for rec in records:
        o = result.universe.outcomes[rec.setup.id]
        if o.settled:
            rows.append(outcome_row(o, allowed=True, position_size=rec.risk.position_size))
    if rows:
        await repo.save_outcomes(rows)
    for point in result.arms["learning"].weight_history:
        event = AuditEvent(
            id=f"{key}:reflect:{point.day.isoformat()}",
            correlation_id=key,
            action="replay.reflect",
            outcome="success",
            payload=point.model_dump(mode="json"),
        )
        await repo.record_audit(event, idempotency_key=event.id)


def _print_report(rep: ReplayReport, result: ReplayResult) -> None:
    out = _cli().out
    out.print(
        f"replay {rep.start.isoformat()} .. {rep.end.isoformat()}: {rep.sessions} sessions, "
        f"{rep.symbols} symbols, "
        f"{rep.setups} setups, {rep.reflections} reflections"
        + (f" (resumed at session {result.resumed_from + 1})" if result.resumed_from else "")
    )
    table = Table(title="Per arm and strategy")
    for col in ("arm", "strategy", "trades", "win rate", "expectancy", "profit factor", "max DD", "P&L"):
        table.add_column(col)
    for arm in rep.arms:
        pf = "-" if arm.profit_factor is None else f"{arm.profit_factor:.2f}"
        table.add_row(
            arm.name, "[b]all[/]", str(arm.trades), f"{arm.win_rate:.1%}", f"{arm.expectancy:+.3f}R", pf,
            f"{arm.max_drawdown:.2%}", f"{arm.pnl:,.2f}",
        )  # fmt: skip
        for s in arm.strategies:
            spf = "-" if s.profit_factor is None else f"{s.profit_factor:.2f}"
            table.add_row(
                "", escape(s.strategy_id), str(s.trades), f"{s.win_rate:.1%}", f"{s.expectancy:+.3f}R", spf,
                f"{s.max_drawdown_r:.2f}R", f"{s.pnl:,.2f}",
            )  # fmt: skip
    out.print(table)
    weights = Table(title="Weights over time (learning)")
    learning = rep.arms[0]
    ids = sorted({sid for w in learning.weights for sid in w.weights})
    weights.add_column("day")
    for sid in ids:
        weights.add_column(escape(sid))
    step = max(1, len(learning.weights) // 12)
    for w in learning.weights[::step]:
        weights.add_row(
            w.day.isoformat(),
            *[f"{w.weights.get(sid, 1.0):.3f}" + (" S" if sid in w.suspended else "") for sid in ids],
        )
    out.print(weights)
    out.print(escape(rep.verdict))


def reflect(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="settle and reflect as of (default: latest)")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    db: Annotated[str | None, typer.Option(help="database URL (default: SQLite file)")] = None,
    data: Annotated[Path | None, typer.Option(help="csv file or folder (implies --provider csv)")] = None,
) -> None:
    """Settle the stored setups' outcomes, then reflect on them: beliefs and the weights they imply."""
    cli = _cli()
    overrides: dict[str, Any] = {"database_url": db}
    if data is not None:
        overrides.update(data_path=data, provider="csv")
    settings = cli._settings(**overrides)
    when = cli._parse_date(as_of)
    with cli._errors():
        summary = asyncio.run(_reflect(settings, when))
    if json_out:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        return
    cli.out.print(
        f"settled {summary['settled']['settled']} new outcome(s) as of {summary['asOf']} "
        f"({summary['settled']['still_open']} still open)"
    )
    for line in summary["summaries"]:
        cli.out.print(f"- {escape(line)}")
    for sid, w in summary["weights"].items():
        state = "SUSPENDED" if w["suspended"] else f"x{w['weight']:.4f}"
        cli.out.print(f"{escape(sid)}: {state}")
    thought = summary.get("reasoner") or {}
    if settings.learning.reasoner == "llm":
        if thought.get("fallbackReason"):
            cli.out.print(
                f"llm reasoner unavailable, local beliefs only: {escape(thought['fallbackReason'])}"
            )
        for insight in summary.get("insights", []):
            cli.out.print(f"* {escape(insight['summary'])} (confidence {insight['confidence']:.2f})")


async def _reflect(settings: Settings, as_of: date | None) -> dict[str, Any]:
    from jax_assistant.learning.service import reflect_once
    from jax_assistant.orchestrator import Orchestrator

    async with Orchestrator(settings) as orch:
        provider = orch.provider()
        day = orch.resolve_as_of(provider, as_of)
        assert orch.repository is not None
        return await reflect_once(
            orch.repository, provider, settings, as_of=day, memory=orch.memory, outbox=orch.memory_outbox
        )
