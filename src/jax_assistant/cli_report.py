"""What the operator reads after `jax run` / `jax runs show`: the setups table and the run summary.

Built for an 80-column terminal: one line per setup (cells are cut with an ellipsis, never folded
letter by letter), short labels for strategies, events and rejection codes with a legend under the
table, and by default only the symbols worth reading (setups, events, failures, data problems).
Every user-supplied string is escaped, so ``[bracketed]`` text is printed rather than read as markup.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from jax_assistant.domain import Run, SymbolResult, TradeRecord
from jax_assistant.research.report import research_line

EVENT_CODES = {"earnings_surprise": "E", "gap_open": "G", "volume_spike": "V", "volatility_spike": "X"}
STATUS_LABELS = {
    "succeeded": ("ok", "green"),
    "degraded": ("deg", "yellow"),
    "failed": ("FAIL", "red"),
    "cancelled": ("canc", "magenta"),
    "pending": ("pend", "cyan"),
    "running": ("run", "cyan"),
    "completed": ("done", "green"),
}
NO_BAR_PREFIX = "no bar"  # the detect stage's note for a symbol without a bar on the as-of date


@dataclass
class Legend:
    """Short, unique labels for long names (strategy ids, violation codes), listed under the table."""

    make: Callable[[str], str]
    labels: dict[str, str] = field(default_factory=dict)

    def __call__(self, name: str) -> str:
        if name not in self.labels:
            base = self.make(name) or name[:3]
            label, n = base, 2
            while label in self.labels.values():
                label, n = f"{base}{n}", n + 1
            self.labels[name] = label
        return self.labels[name]

    def line(self, title: str, width: int = 80) -> str:
        """``title: a=x, b=y`` wrapped between entries (continuation lines indented by two spaces), so
        the terminal never breaks a label from what it stands for."""
        lines, current = [], f"{title}:"
        for entry in (f"{v}={k}" for k, v in self.labels.items()):
            if len(current) + 2 + len(entry) > width and current != f"{title}:":
                lines.append(current + ",")
                current = "  " + entry
            else:
                current += (" " if current == f"{title}:" else ", ") + entry
        return "\n".join([*lines, current])


FILLER = frozenset({"TOO", "IS", "OF", "THE", "A"})


def _initials(name: str, skip: frozenset[str] = frozenset()) -> str:
    """``earnings_gap_v1`` -> ``eg``, ``SECTOR_EXPOSURE_TOO_HIGH`` -> ``SEH`` (version, fillers dropped)."""
    words = [
        w for w in re.split(r"[_\W]+", name) if w and not re.fullmatch(r"v\d+", w) and w.upper() not in skip
    ]
    return "".join(w[0] for w in words)


def is_quiet(result: SymbolResult) -> bool:
    """Nothing to read: succeeded, no setups, no events, no data problem (a missing bar is counted apart)."""
    problems = [i for i in result.data_issues if not i.startswith(NO_BAR_PREFIX)]
    return (
        result.status.value == "succeeded"
        and not result.trades
        and not result.events
        and not problems
        and not result.error
    )


def has_no_bar(result: SymbolResult) -> bool:
    return any(i.startswith(NO_BAR_PREFIX) for i in result.data_issues)


@dataclass
class Report:
    run: Run
    results: Sequence[SymbolResult]
    show_all: bool = False
    sector_of: Callable[[str], str | None] | None = None
    # Setup lines in the table unless --all: every allowed setup, then the best-ranked others. A
    # 505-symbol scan at lookback 60 has ~20 000 setups; rendering them all took 50 s and nobody reads
    # them in a terminal (`jax trades list --run` and --json have every one).
    max_setups: int = 40
    strategies: Legend = field(default_factory=lambda: Legend(_initials))
    codes: Legend = field(default_factory=lambda: Legend(lambda code: _initials(code, skip=FILLER)[:3]))
    _visible: set[str] | None = field(default=None, init=False, repr=False)
    # The table, the notes and the summary each walk the shown rows (7 times per report): computed once,
    # since at lookback 60 each walk tests ~20 000 setups for visibility.
    _shown: list[SymbolResult] | None = field(default=None, init=False, repr=False)
    # Every trade of the run with its ``risk.allowed`` (a property over the constraints), read once:
    # the table, notes and summary ask it ~4 times per setup, 20 867 setups at lookback 60.
    _trades: list[tuple[TradeRecord, bool]] | None = field(default=None, init=False, repr=False)

    @property
    def lookback(self) -> int:
        return int(self.run.params.get("lookback", 1) or 1)

    @property
    def account(self) -> float:
        return float(self.run.params.get("accountSize") or 0.0)

    def trades(self) -> list[tuple[TradeRecord, bool]]:
        """Every trade of the run, in result order, with whether risk allowed it."""
        if self._trades is None:
            self._trades = [(t, t.risk.allowed) for r in self.results for t in r.trades]
        return self._trades

    def shown(self) -> list[SymbolResult]:
        if self._shown is None:
            visible = None if self.show_all else self.visible
            self._shown = (
                list(self.results)
                if self.show_all
                else [
                    r
                    for r in self.results
                    if not is_quiet(r)
                    and (not r.trades or visible is None or any(t.setup.id in visible for t in r.trades))
                ]
            )
        return self._shown

    @property
    def visible(self) -> set[str] | None:
        """Setup ids the table shows, or None for all of them."""
        if self._visible is None and not self.show_all:
            trades = self.trades()
            if len(trades) > self.max_setups:
                best = sorted(
                    trades,
                    key=lambda ta: (
                        not ta[1],
                        ta[0].risk.rank if ta[0].risk.rank is not None else len(trades),
                        ta[0].setup.id,
                    ),
                )
                keep = max(self.max_setups, sum(1 for _, allowed in trades if allowed))
                self._visible = {t.setup.id for t, _ in best[:keep]}
        return self._visible

    def is_visible(self, t: TradeRecord) -> bool:
        visible = self.visible
        return visible is None or t.setup.id in visible

    # ------------------------------------------------------------------ the setups table

    def table(self) -> Table:
        title = f"Run {self.run.id} - as of {self.run.as_of} - {escape(self.run.provider)}"
        if self.run.simulated:
            title += " [bold yellow](SIMULATED)[/]"
        table = Table(
            title=title,
            title_justify="left",
            box=None,  # no rules or dividers, one space between columns: 80 columns hold every field
            padding=(0, 1, 0, 0),
            pad_edge=False,
            header_style="bold underline",
        )

        def col(name: str, right: bool = False, min_width: int | None = None) -> None:
            table.add_column(
                name,
                justify="right" if right else "left",
                no_wrap=True,
                overflow="ellipsis",
                min_width=min_width,
            )

        col("symbol", min_width=6)
        if self.lookback > 1:
            col("date")
        col("ev")
        col("strat")
        col("entry", True)
        col("stop", True)
        col("target", True)
        col("R", True)
        col("cf", True)
        col("size", True)  # signed, as traders write it: +long, -short
        col("$risk", True)
        col("%", True)
        # The risk helper's allocation adds a rank/score to RiskResult; it goes in a column here.
        col("decision", min_width=4)
        # Only when some symbol did not succeed: the common all-ok run keeps the room for the date.
        with_status = any(r.status.value != "succeeded" for r in self.shown())
        if with_status:
            col("st")
        for r in self.shown():
            self._add_symbol(table, r, with_status)
        return table

    def _add_symbol(self, table: Table, r: SymbolResult, with_status: bool) -> None:
        label, style = STATUS_LABELS.get(r.status.value, (r.status.value, "white"))
        status = f"[{style}]{label}[/]"
        events = "".join(sorted({EVENT_CODES.get(e.type, e.type[:1].upper()) for e in r.events})) or "-"
        dated = self.lookback > 1
        if not r.trades:
            # Long notes go under the table (see notes()), so they never squeeze the columns.
            cells = [escape(r.symbol)] + (["-"] if dated else []) + [events, "-"] + [""] * 9
            table.add_row(*cells, *([status] if with_status else []))
            return
        for i, t in enumerate(t for t in r.trades if self.is_visible(t)):
            first = i == 0
            s, risk = t.setup, t.risk
            cells = [escape(r.symbol) if first else ""]
            if dated:
                day = s.time.date() if s.time else (t.event.time.date() if t.event else None)
                cells.append(f"{day:%m-%d}" if day else "-")
            cells += [
                events if first else "",
                self.strategies(s.strategy_id),
                f"{s.entry:.2f}",
                f"{s.stop:.2f}",
                f"{s.targets[0]:.2f}" if s.targets else "-",
                f"{risk.r_multiple:.1f}",
                f"{s.confidence * 100:.0f}",
                _signed(risk.position_size, s.direction.value),
                f"{risk.total_risk:,.0f}",
                f"{risk.total_risk / risk.account_size * 100:.2f}" if risk.account_size else "-",
                self._decision(t),
            ]
            table.add_row(*cells, *([status if first else ""] if with_status else []))

    def _decision(self, t: TradeRecord) -> str:
        c = t.risk.constraints
        if not c.allowed:
            # The first (deciding) code only, "+" when there are more: the summary tallies them all.
            codes = [self.codes(v.code) for v in c.violations]
            return "[red]no[/] " + (codes[0] + ("+" if len(codes) > 1 else "") if codes else "?")
        if t.risk.decision == "candidate":
            # Passed the per-symbol checks but never allocated (a pipeline without `allocate`).
            return "[yellow]cand[/]"
        return "[green]ok*[/]" if c.adjustments else "[green]ok[/]"

    def notes(self) -> list[str]:
        """The legend, the clamps (from -> to) and the count of rows left out."""
        lines: list[str] = []
        events_seen = {e.type for r in self.shown() for e in r.events}
        if events_seen:
            lines.append(
                "ev: " + ", ".join(f"{EVENT_CODES.get(e, e[:1].upper())}={e}" for e in sorted(events_seen))
            )
        if self.strategies.labels:
            lines.append(self.strategies.line("strat"))
        if self.codes.labels:
            lines.append(self.codes.line("rejected"))
        lines.append(
            "size: +long -short, cf: confidence %, %: $risk of the account"
            + (
                ", cand: not allocated (no allocate stage)"
                if any(t.risk.decision == "candidate" for r in self.shown() for t in r.trades)
                else ""
            )
            + (
                ", st: ok/deg(raded)/FAIL/canc(elled)"
                if any(r.status.value != "succeeded" for r in self.shown())
                else ""
            )
        )
        for r in self.shown():
            for t in r.trades:
                if t.risk.allowed and t.risk.constraints.adjustments:
                    lines.append(
                        f"ok* {escape(r.symbol)} {self.strategies(t.setup.strategy_id)} clamped: {clamps(t)}"
                    )
        for r in self.shown():
            note = r.error or next((i for i in r.data_issues if not i.startswith(NO_BAR_PREFIX)), "")
            if note:
                more = len(r.data_issues) - (0 if r.error else 1)
                tail = f" (+{more} more: jax runs show {self.run.id})" if more > 0 else ""
                # Data issues already start with their symbol; errors do not.
                label = "" if note.startswith(f"{r.symbol}:") else f"{escape(r.symbol)}: "
                lines.append(f"[dim]{label}{escape(note)}{tail}[/]")
        visible = self.visible
        hidden = [t for t, _ in self.trades() if t.setup.id not in visible] if visible is not None else []
        if hidden and not self.show_all:
            symbols = len({t.setup.symbol for t in hidden})
            lines.append(
                f"{len(hidden)} lower-ranked rejected setup(s) of {symbols} symbol(s) not shown; --all lists"
                f" them, as does `jax trades list --run {self.run.id}`"
            )
        if not self.show_all:
            quiet = [r for r in self.results if is_quiet(r)]
            no_bar = sum(1 for r in quiet if has_no_bar(r))
            if quiet:
                extra = f", {no_bar} of them with no bar on {self.run.as_of}" if no_bar else ""
                lines.append(
                    f"{len(quiet)} quiet symbol(s) not shown (no setup, event or problem){extra}; "
                    "--all shows them"
                )
        return lines

    # ------------------------------------------------------------------ the summary

    def summary(self) -> list[str]:
        run, c = self.run, self.run.counts
        allowed = [t for t, ok in self.trades() if ok]
        total_risk = sum(t.risk.total_risk for t in allowed)
        elapsed = (
            f"{(run.finished_at - run.started_at).total_seconds():.1f}s" if run.finished_at else "running"
        )
        risk_pct = run.params.get("riskPercent")
        style = STATUS_LABELS.get(run.status.value, ("", "white"))[1]
        lines = [
            f"run {run.id} [{style}]{escape(run.status.value)}[/] in {elapsed}"
            f" | account ${self.account:,.0f} at {risk_pct}% per trade"
            f" | total risk ${total_risk:,.0f}"
            + (f" ({total_risk / self.account * 100:.2f}%)" if self.account else ""),
            " | ".join(
                [
                    f"{c.get('symbols', 0)} symbols",
                    f"[green]{c.get('succeeded', 0)} succeeded[/]",
                    f"[yellow]{c.get('degraded', 0)} degraded[/]",
                    f"[red]{c.get('failed', 0)} failed[/]",
                    f"[magenta]{c.get('cancelled', 0)} cancelled[/]",
                    f"{c.get('events', 0)} events",
                    f"{c.get('setups', 0)} setups ({c.get('allowed', 0)} allowed)",
                ]
            ),
        ]
        per_strategy: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for t, ok in self.trades():
            counts = per_strategy[t.setup.strategy_id]
            counts[0] += 1
            counts[1] += ok
        if per_strategy:
            lines.append(
                "strategies: "
                + ", ".join(f"{escape(k)} {n} ({a} allowed)" for k, (n, a) in sorted(per_strategy.items()))
            )
        reasons = Counter(v.code for t, _ in self.trades() for v in t.risk.constraints.violations)
        if reasons:
            lines.append("rejections: " + ", ".join(f"{escape(k)} {n}" for k, n in reasons.most_common()))
        if self.sector_of is not None and allowed and self.account:
            lines.append("exposure: " + sector_exposure(allowed, self.sector_of, self.account))
        if (research := research_line(allowed)) is not None:
            lines.append(escape(research))
        if c.get("failed"):
            lines.append("[dim]failed symbols are in the dead-letter queue: `jax dlq list`[/]")
        return lines

    def renderable(self) -> RenderableType:
        return Group(self.table(), *(Text.from_markup(x) for x in self.notes() + self.summary()))


def sector_exposure(
    trades: Iterable[TradeRecord], sector_of: Callable[[str], str | None], account: float
) -> str:
    """Value of the allowed positions per sector, as a percent of the account, largest first."""
    value: dict[str, float] = defaultdict(float)
    for t in trades:
        value[sector_of(t.setup.symbol) or "unknown"] += t.risk.position_size * t.setup.entry
    ranked = sorted(value.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{escape(k)} {v / account * 100:.1f}%" for k, v in ranked)


FIELD_LABELS = {"risk_percent": "risk%", "position_size": "size"}


def clamps(t: TradeRecord) -> str:
    """Each clamped field once, from what was asked to what was applied: ``size 17->9 (sector_exposure)``."""
    first: dict[str, Any] = {}
    last: dict[str, Any] = {}
    rules: dict[str, list[str]] = defaultdict(list)
    for a in t.risk.constraints.adjustments:
        first.setdefault(a.field, a.requested)
        last[a.field] = a.applied
        rules[a.field].append(a.rule.removeprefix("max_"))
    return ", ".join(
        f"{FIELD_LABELS.get(f, f)} {_num(first[f])}->{_num(last[f])} ({'+'.join(rules[f])})" for f in first
    )


def _signed(size: int, direction: str) -> str:
    if size == 0:
        return "0"
    return f"{'-' if direction == 'short' else '+'}{size}"


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)
