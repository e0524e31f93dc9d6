"""One earnings_surprise per report, on its reaction session, over every real symbol.

Checked against ``earnings_details.csv`` read here with polars (not via marketdata): a ``pre``
report reacts on its date (the next session if that is not one), a ``post`` report on the next
session. Sessions here are the dates that occur anywhere in the 505-symbol file.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from jax_assistant.analysis import DetectorConfig, detect_events
from jax_assistant.marketdata import CsvProvider

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

SP500 = "daily_ohlcv_stooq_sp500.csv.gz"


@pytest.fixture(scope="module")
def provider(shared_data: Path) -> CsvProvider:
    return CsvProvider(shared_data / SP500)


def test_one_event_per_report_on_its_reaction_session(provider: CsvProvider, shared_data: Path) -> None:
    raw = pl.read_csv(shared_data / "earnings_details.csv", columns=["symbol", "date", "release_time"])
    all_dates = pl.read_csv(shared_data / SP500, columns=["date"], try_parse_dates=True)["date"]
    sessions = sorted(set(all_dates.to_list()))
    reports: dict[str, list[tuple[date, str]]] = {}
    for sym, d, release in raw.iter_rows():
        reports.setdefault(sym, []).append((date.fromisoformat(d), release))

    cfg = DetectorConfig(enabled=["earnings_surprise"])
    expected: set[tuple[str, date, date]] = set()  # (symbol, reaction session, report date)
    got: set[tuple[str, date, date]] = set()
    per_report: Counter[tuple[str, date]] = Counter()
    checked = 0
    for sym in provider.symbols():
        s = provider.bars(sym)
        if len(s) < 2 or sym not in reports:
            continue
        index = {s.date_at(i): i for i in range(len(s))}
        for d, release in reports[sym]:
            k = bisect_right(sessions, d) if release == "post" else bisect_left(sessions, d)
            if k >= len(sessions):
                continue  # reacts after the data ends
            t = index.get(sessions[k])
            if t is None or t < 20:
                continue
            checked += 1
            gap = (s.open[t] - s.close[t - 1]) / s.close[t - 1] * 100
            avg = float(s.volume[t - 20 : t].sum()) / 20
            if abs(gap) >= 2.0 - 1e-9 or (avg > 0 and s.volume[t] / avg >= 1.5 - 1e-9):
                expected.add((sym, sessions[k], d))
        for ev in detect_events(s, provider.earnings_reports(sym), cfg, lookback=len(s)):
            report = date.fromisoformat(ev.payload["earningsDate"])
            got.add((sym, ev.session, report))
            per_report[(sym, report)] += 1
            assert ev.payload["releaseTime"] in ("pre", "post")
    assert checked > 9000  # README: 9,592 report dates <= 2017-11-10
    assert per_report and max(per_report.values()) == 1  # never two events for one report
    assert got == expected
    assert len(got) > 0.8 * checked  # README: 83 % of reactions have volume > 1.5x
