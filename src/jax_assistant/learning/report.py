"""The replay's report: per-arm and per-strategy figures, and a self-contained HTML page.

The HTML page has no script and loads nothing: every chart is an inline SVG drawn here (equity of
each arm, strategy weights over time, the R distribution of each strategy's trades).
"""

from __future__ import annotations

import html
from datetime import date

from pydantic import BaseModel, ConfigDict

from jax_assistant.learning.replay import ArmName, ArmState, ReplayResult, WeightPoint
from jax_assistant.memory.beliefs import track_record

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


class StrategyFigures(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy_id: str
    trades: int
    win_rate: float
    expectancy: float
    profit_factor: float | None
    total_r: float
    max_drawdown_r: float
    pnl: float
    r_values: list[float]


class ArmFigures(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ArmName
    trades: int
    open_at_end: int
    win_rate: float
    expectancy: float
    profit_factor: float | None
    pnl: float
    final_equity: float
    return_pct: float
    max_drawdown: float
    suspended_rejections: int
    strategies: list[StrategyFigures]
    equity: list[tuple[date, float]]
    weights: list[WeightPoint]


class ReplayReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    start: date
    end: date
    sessions: int
    symbols: int
    setups: int
    reflections: int
    arms: list[ArmFigures]
    beliefs: list[str]  # belief summaries at the end
    verdict: str


def _max_drawdown(values: list[float]) -> float:
    peak, worst = float("-inf"), 0.0
    for v in values:
        peak = max(peak, v)
        if peak > 0:
            worst = max(worst, (peak - v) / peak)
    return round(worst, 6)


def _max_drawdown_r(rs: list[float]) -> float:
    peak = total = worst = 0.0
    for r in rs:
        total += r
        peak = max(peak, total)
        worst = max(worst, peak - total)
    return round(worst, 6)


def _arm(result: ReplayResult, arm: ArmState) -> ArmFigures:
    outcomes = result.universe.outcomes
    last = arm.equity[-1][0] if arm.equity else result.params.start
    done = []
    for t in arm.taken:
        o = outcomes[t.setup_id]
        if o.settled and o.fill_price is not None and o.settled_through <= last:
            pnl = (o.exit_price or 0.0) - o.fill_price
            sign = 1.0 if o.direction.value == "long" else -1.0
            done.append((t, o.r_multiple, sign * pnl * t.size, o.settled_through))
    done.sort(key=lambda x: (x[3], x[0].setup_id))
    rs = [r for _, r, _, _ in done]
    rec = track_record(rs) if rs else None
    strategies = []
    for sid in sorted({t.strategy_id for t, _, _, _ in done}):
        mine = [(r, pnl) for t, r, pnl, _ in done if t.strategy_id == sid]
        srec = track_record([r for r, _ in mine])
        strategies.append(
            StrategyFigures(
                strategy_id=sid,
                trades=srec.sample_size,
                win_rate=srec.win_rate,
                expectancy=srec.expectancy,
                profit_factor=srec.profit_factor,
                total_r=round(sum(r for r, _ in mine), 6),
                max_drawdown_r=_max_drawdown_r([r for r, _ in mine]),
                pnl=round(sum(p for _, p in mine), 2),
                r_values=[r for r, _ in mine],
            )
        )
    final = arm.equity[-1][1] if arm.equity else result.params.account_size
    return ArmFigures(
        name=arm.name,
        trades=len(done),
        open_at_end=len(arm.taken) - len(done),
        win_rate=rec.win_rate if rec else 0.0,
        expectancy=rec.expectancy if rec else 0.0,
        profit_factor=rec.profit_factor if rec else None,
        pnl=round(sum(p for _, _, p, _ in done), 2),
        final_equity=final,
        return_pct=round((final / result.params.account_size - 1) * 100, 4),
        max_drawdown=_max_drawdown([e for _, e in arm.equity]),
        suspended_rejections=arm.rejected_suspended,
        strategies=strategies,
        equity=arm.equity,
        weights=arm.weight_history,
    )


def build_report(result: ReplayResult) -> ReplayReport:
    arms = [_arm(result, result.arms[name]) for name in result.params.arms]
    if len(arms) == 2:
        learn, static = arms
        diff = learn.final_equity - static.final_equity
        if abs(diff) < 0.005:
            verdict = "Learning and static ended level."
        else:
            winner = "learning" if diff > 0 else "static"
            verdict = (
                f"The {winner} arm did better: learning {learn.return_pct:+.2f}% "
                f"(max drawdown {learn.max_drawdown:.2%}) vs static {static.return_pct:+.2f}% "
                f"(max drawdown {static.max_drawdown:.2%})."
            )
    else:
        verdict = f"Learning arm only (no --compare-static): {arms[0].return_pct:+.2f}%."
    u = result.universe
    return ReplayReport(
        key=result.params.key(),
        start=result.params.start,
        end=result.params.end,
        sessions=len(u.sessions),
        symbols=len(u.closes),
        setups=sum(len(v) for v in u.setups.values()),
        reflections=sum(1 for i in range(len(u.sessions)) if i % result.params.reflect_every == 0),
        arms=arms,
        beliefs=[b.summary for b in result.beliefs if b.belief_type == "strategy_track_record"],
        verdict=verdict,
    )


# --------------------------------------------------------------------------- HTML


def _polyline_chart(
    title: str,
    series: list[tuple[str, list[tuple[date, float]]]],
    *,
    kind: str,
    width: int = 760,
    height: int = 260,
) -> str:
    pts = [p for _, s in series for p in s]
    if not pts:
        return (
            f'<svg class="chart" data-chart="{kind}" width="{width}" height="40">'
            '<text x="8" y="24">no data</text></svg>'
        )
    x0, x1 = min(p[0] for p in pts).toordinal(), max(p[0] for p in pts).toordinal()
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad = 44
    sx = (width - 2 * pad) / max(1, x1 - x0)
    sy = (height - 2 * pad) / (y1 - y0)
    parts = [
        f'<svg class="chart" data-chart="{kind}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{pad}" y="18" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
        f'<text x="2" y="{pad + 4}" font-size="10">{y1:,.2f}</text>',
        f'<text x="2" y="{height - pad}" font-size="10">{y0:,.2f}</text>',
        f'<text x="{pad}" y="{height - pad + 14}" font-size="10">{date.fromordinal(x0).isoformat()}</text>',
        f'<text x="{width - pad - 60}" y="{height - pad + 14}" font-size="10">'
        f"{date.fromordinal(x1).isoformat()}</text>",
    ]
    for i, (name, s) in enumerate(series):
        colour = _COLOURS[i % len(_COLOURS)]
        coords = " ".join(
            f"{pad + (d.toordinal() - x0) * sx:.1f},{height - pad - (v - y0) * sy:.1f}" for d, v in s
        )
        parts.append(
            f'<polyline data-series="{html.escape(name)}" fill="none" stroke="{colour}" stroke-width="1.5" '
            f'points="{coords}"/>'
        )
        parts.append(
            f'<text x="{width - pad + 4 - 120}" y="{pad + 14 * i}" font-size="11" fill="{colour}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _histogram(title: str, values: list[float], *, width: int = 360, height: int = 180) -> str:
    bins = [(-3.0 + 0.5 * i, -2.5 + 0.5 * i) for i in range(14)]  # -3R .. +4R in half-R bins
    counts = [0] * len(bins)
    for v in values:
        k = min(len(bins) - 1, max(0, int((v + 3.0) // 0.5)))
        counts[k] += 1
    top = max(counts) or 1
    pad, bw = 30, (width - 60) / len(bins)
    parts = [
        f'<svg class="chart" data-chart="r-histogram" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{pad}" y="16" font-weight="bold" font-size="12">{html.escape(title)}</text>',
    ]
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / top
        colour = "#d62728" if bins[i][1] <= 0 else "#2ca02c"
        parts.append(
            f'<rect data-bin="{bins[i][0]:+.1f}" data-count="{c}" x="{pad + i * bw:.1f}" '
            f'y="{height - pad - h:.1f}" '
            f'width="{bw - 2:.1f}" height="{h:.1f}" fill="{colour}"/>'
        )
    parts.append(f'<text x="{pad}" y="{height - 8}" font-size="10">-3R</text>')
    parts.append(f'<text x="{width - pad - 20}" y="{height - 8}" font-size="10">+4R</text>')
    parts.append("</svg>")
    return "".join(parts)


def _pf(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(arm: ArmFigures) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s.strategy_id)}</td><td>{s.trades}</td><td>{s.win_rate:.1%}</td>"
        f"<td>{s.expectancy:+.3f}R</td><td>{_pf(s.profit_factor)}</td>"
        f"<td>{s.max_drawdown_r:.2f}R</td><td>{s.pnl:,.2f}</td></tr>"
        for s in arm.strategies
    )
    pf = "-" if arm.profit_factor is None else f"{arm.profit_factor:.2f}"
    return (
        f"<h3>{arm.name}</h3><p>{arm.trades} settled trades ({arm.open_at_end} open at the end), win rate "
        f"{arm.win_rate:.1%}, expectancy {arm.expectancy:+.3f}R, profit factor {pf}, P&amp;L {arm.pnl:,.2f}, "
        f"return {arm.return_pct:+.2f}%, max drawdown {arm.max_drawdown:.2%}, setups refused while their "
        f"strategy was suspended {arm.suspended_rejections}.</p>"
        "<table><tr><th>strategy</th><th>trades</th><th>win rate</th><th>expectancy</th>"
        f"<th>profit factor</th><th>max drawdown</th><th>P&amp;L</th></tr>{rows}</table>"
    )


def render_html(report: ReplayReport) -> str:
    equity = _polyline_chart("Equity (realised)", [(a.name, a.equity) for a in report.arms], kind="equity")
    learning = report.arms[0]
    ids = sorted({sid for w in learning.weights for sid in w.weights})
    weights = _polyline_chart(
        "Strategy weights over time (learning arm)",
        [(sid, [(w.day, w.weights.get(sid, 1.0)) for w in learning.weights]) for sid in ids],
        kind="weights",
    )
    hists = "".join(
        _histogram(f"{a.name}: {s.strategy_id} ({s.trades} trades)", s.r_values)
        for a in report.arms
        for s in a.strategies
    )
    beliefs = "".join(f"<li>{html.escape(b)}</li>" for b in report.beliefs)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Replay {html.escape(report.key)}</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:1em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}svg.chart{display:block;margin:8px 0}"
        "</style></head><body>"
        f"<h1>Replay {report.start.isoformat()} to {report.end.isoformat()}</h1>"
        f"<p>{report.sessions} sessions, {report.symbols} symbols, {report.setups} setups, "
        f"{report.reflections} reflections. Real data, no look-ahead.</p>"
        f"<p><strong>{html.escape(report.verdict)}</strong></p>"
        f"{equity}{weights}"
        + "".join(_table(a) for a in report.arms)
        + f"<h2>R distribution per strategy</h2><div>{hists}</div>"
        f"<h2>Beliefs at the end</h2><ul>{beliefs}</ul>"
        "</body></html>"
    )
