"""The replay on real data: beliefs move weights and later setups cite them, suspension and
re-admission, no look-ahead (prefix invariance), the same decisions as ``jax run --as-of D``, and the
HTML report's charts."""

from __future__ import annotations

import gzip
import itertools
import json
import re
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jax_assistant.analysis.detectors import DetectorConfig
from jax_assistant.cli import app
from jax_assistant.learning.replay import Replayer, ReplayParams, ReplayResult
from jax_assistant.learning.report import build_report, render_html
from jax_assistant.marketdata import CsvProvider
from jax_assistant.risk import load_risk_constraints
from jax_assistant.strategies import StrategyRegistry

pytestmark = [pytest.mark.realdata]

SP500 = "daily_ohlcv_stooq_sp500.csv.gz"
SYMBOLS = ["AAPL", "MSFT", "XOM", "JPM", "GE", "KO", "PG", "INTC"]
START, END = date(2015, 1, 2), date(2015, 12, 31)


def replay(
    provider: CsvProvider, start: date, end: date, *, static: bool = True, **kw: object
) -> ReplayResult:
    params = ReplayParams(start=start, end=end, symbols=SYMBOLS, compare_static=static, **kw)  # type: ignore[arg-type]
    return Replayer(
        provider,
        params,
        detectors=DetectorConfig(),
        constraints=load_risk_constraints(),
        registry_factory=StrategyRegistry.default,
    ).run()


@pytest.fixture(scope="module")
def provider(shared_data: Path) -> CsvProvider:
    return CsvProvider(shared_data / SP500, symbols=SYMBOLS)


@pytest.fixture(scope="module")
def year(provider: CsvProvider) -> ReplayResult:
    return replay(provider, START, END)


def test_reflections_change_weights_and_later_setups_cite_the_beliefs(year: ReplayResult) -> None:
    learning, static = year.arms["learning"], year.arms["static"]
    first, later = learning.weight_history[0], learning.weight_history[-1]
    assert set(first.weights.values()) == {1.0}  # nothing known on day one
    moved = {sid for sid, w in later.weights.items() if w != 1.0}
    assert moved, "a year of outcomes must move some strategy's weight"
    assert all(set(p.weights.values()) == {1.0} for p in static.weight_history)  # static never learns
    cited = [t for t in learning.taken if t.belief_id is not None]
    assert cited and all(t.weight != 1.0 or t.belief_id for t in cited)
    records = {r.setup.id: r for r in year.records["learning"]}
    for t in cited:
        assert t.belief_id in records[t.setup_id].setup.notes
        assert f"weight x{t.weight:.4f}" in records[t.setup_id].setup.notes
    # The beliefs' evidence is real settled outcomes known on the day they were reflected.
    for b in year.beliefs:
        assert all(year.universe.outcomes[i].settled_through <= b.time_window[1] for i in b.evidence_ids)
    # And learning changed what was traded.
    assert [t.setup_id for t in learning.taken] != [t.setup_id for t in static.taken]


def test_suspension_keeps_paper_tracking_and_a_strategy_earns_its_way_back(year: ReplayResult) -> None:
    learning = year.arms["learning"]
    history = learning.weight_history
    readmitted = [
        (sid, after.day)
        for before, after in itertools.pairwise(history)
        for sid in sorted(set(before.suspended) - set(after.suspended))
    ]
    assert readmitted, "some strategy must be suspended and later re-admitted in this period"
    # Which strategies were suspended on each session: those of the newest reflection up to it.
    suspended_on: dict[date, set[str]] = {}
    points = iter(history)
    current = next(points)
    upcoming = next(points, None)
    for day in year.universe.sessions:
        while upcoming is not None and upcoming.day <= day:
            current, upcoming = upcoming, next(points, None)
        suspended_on[day] = set(current.suspended)
    # Never allocated on a day it was suspended...
    assert not [t for t in learning.taken if t.strategy_id in suspended_on[t.decided_on]]
    assert learning.rejected_suspended > 0
    # ...but its setups kept being generated and settled (paper-tracked): that evidence re-admitted it.
    for sid, back_on in readmitted:
        paper = [
            o
            for day, ids in suspended_on.items()
            if sid in ids
            for s in year.universe.setups.get(day, [])
            if s.strategy_id == sid
            for o in [year.universe.outcomes[s.id]]
            if o.settled and o.settled_through < back_on
        ]
        assert paper, f"{sid} must have paper trades settled while suspended"
    # And a re-admitted strategy is allocated room again.
    for sid, back_on in readmitted:
        assert any(t.strategy_id == sid and t.decided_on >= back_on for t in learning.taken), sid


def test_prefix_invariance_data_cut_at_d(provider: CsvProvider, tmp_path: Path, shared_data: Path) -> None:
    cut = date(2015, 6, 30)
    lines = []
    with gzip.open(shared_data / SP500, "rt") as fh:
        header = next(fh)
        for line in fh:
            sym, day = line.split(",", 2)[:2]
            if sym in SYMBOLS and day <= cut.isoformat():
                lines.append(line)
    path = tmp_path / "cut.csv"
    path.write_text(header + "".join(lines))
    # The same side files (earnings, sectors) as the full provider reads beside the price file.
    cut_provider = CsvProvider(
        path, earnings_path=shared_data / "earnings_details.csv", sectors_path=shared_data / "sectors.csv"
    )
    short = replay(cut_provider, START, cut, static=False)
    long = replay(provider, START, date(2015, 9, 30), static=False)
    a, b = short.arms["learning"], long.arms["learning"]
    assert a.taken == [t for t in b.taken if t.decided_on <= cut]
    assert a.weight_history == [p for p in b.weight_history if p.day <= cut]
    assert a.equity == [e for e in b.equity if e[0] <= cut]
    assert len(a.taken) > 10


def test_replay_decides_as_jax_run_on_the_first_day(
    provider: CsvProvider, shared_data: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    decided = 0
    for day in (date(2015, 3, 2), date(2015, 8, 24)):
        result = replay(provider, day, day, static=False)
        out = runner.invoke(
            app,
            ["run", "--as-of", day.isoformat(), "--data", str(shared_data / SP500), "--db",
             f"sqlite+aiosqlite:///{tmp_path}/run-{day}.db", "--json", *SYMBOLS],
            env={"JAX_DATA_DIR": str(tmp_path)},
        )  # fmt: skip
        assert out.exit_code == 0, out.output
        run = json.loads(out.stdout)
        trades = [t for r in run["symbols"] for t in r["trades"]]
        assert {t["setup"]["id"] for t in trades} == {s.id for s in result.universe.setups.get(day, [])}
        allowed = {
            t["setup"]["id"]: t["risk"]["positionSize"] for t in trades if t["risk"]["constraints"]["allowed"]
        }
        assert allowed == {t.setup_id: t.size for t in result.arms["learning"].taken}
        decided += len(allowed)
    assert decided > 0, "the sample days must allocate something for the comparison to mean anything"


def test_html_report_has_its_charts(year: ReplayResult) -> None:
    report = build_report(year)
    page = render_html(report)
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert not re.search(r"(src|href)=['\"]https?:", page)
    assert page.count('data-chart="equity"') == 1 and page.count('data-chart="weights"') == 1
    assert page.count('data-chart="r-histogram"') == sum(len(a.strategies) for a in report.arms)
    equity = page.split('data-chart="equity"', 1)[1].split("</svg>", 1)[0]
    assert 'data-series="learning"' in equity and 'data-series="static"' in equity
    counts = [int(c) for c in re.findall(r'data-count="(\d+)"', page)]
    assert sum(counts) == sum(s.trades for a in report.arms for s in a.strategies)
    assert report.verdict.startswith(("The learning arm", "The static arm", "Learning and static"))
