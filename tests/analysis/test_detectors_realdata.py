"""Detectors on real daily bars, checked against an independent per-row computation.

The reference walks the rows in plain Python (no numpy, no shared helpers) and applies the rules as
written in the contract and the detector docs; ``detect_events`` must agree exactly.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

import pytest

from jax_assistant.analysis import DetectorConfig, detect_events
from jax_assistant.marketdata.base import BarSeries, EarningsReport

pytestmark = pytest.mark.realdata

TOL = 1e-9  # the documented threshold tolerance


def rows(s: BarSeries) -> tuple[list[date], list[float], list[float], list[float], list[float], list[float]]:
    return (
        [s.date_at(i) for i in range(len(s))],
        s.open.tolist(),
        s.high.tolist(),
        s.low.tolist(),
        s.close.tolist(),
        s.volume.tolist(),
    )


def reference_events(s: BarSeries, earnings: list[EarningsReport]) -> dict[str, dict[date, dict[str, float]]]:
    dates, o, h, lo, c, v = rows(s)
    n = len(dates)
    out: dict[str, dict[date, dict[str, float]]] = defaultdict(dict)

    gap: list[float | None] = [None] + [(o[t] - c[t - 1]) / c[t - 1] * 100 for t in range(1, n)]
    ratio: list[float | None] = [None] * n
    for t in range(20, n):
        avg = sum(v[t - 20 : t]) / 20
        ratio[t] = v[t] / avg if avg > 0 else None

    for t in range(1, n):
        g = gap[t]
        assert g is not None
        if abs(g) >= 3.0 - TOL:
            out["gap_open"][dates[t]] = {"gapPct": g}
        r = ratio[t]
        if r is not None and r >= 2.5 - TOL:
            out["volume_spike"][dates[t]] = {"volumeRatio": r}

    tr = [h[0] - lo[0]] + [
        max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])) for t in range(1, n)
    ]
    atr: list[float | None] = [None] * n
    a = sum(tr[:14]) / 14
    atr[13] = a
    for t in range(14, n):
        a = (a * 13 + tr[t]) / 14
        atr[t] = a
    for t in range(14, n):
        prev = atr[t - 1]
        assert prev is not None
        if prev > 0 and tr[t] / prev >= 2.0 - TOL:
            out["volatility_spike"][dates[t]] = {"trRatio": tr[t] / prev}

    # One reaction bar per report: the first bar on/after the date (before the open), or the first
    # bar after it (after the close). These symbols have no holes in 2012-2017, so that is the session.
    for rep in sorted(earnings, key=lambda r: r.date):
        e = rep.date
        after = [k for k, d in enumerate(dates) if (d > e if rep.release_time == "post" else d >= e)]
        for t in after[:1]:
            if t < 20:
                continue
            g, r = gap[t], ratio[t]
            assert g is not None
            if abs(g) >= 2.0 - TOL or (r is not None and r >= 1.5 - TOL):
                out["earnings_surprise"][dates[t]] = {"gapPct": g, "earningsDate": e}  # type: ignore[dict-item]
    return out


@pytest.mark.parametrize("symbol", ["AAPL", "MSFT", "NVDA", "WFC", "JPM", "AJG"])
def test_detect_events_matches_independent_computation(real_bars, real_reports, symbol: str) -> None:
    s = real_bars[symbol]
    earnings = real_reports[symbol]
    want = reference_events(s, earnings)
    got: dict[str, dict[date, dict[str, object]]] = defaultdict(dict)
    for ev in detect_events(s, earnings, DetectorConfig(), lookback=len(s)):
        assert ev.session not in got[ev.type], "one event per type and session"
        got[ev.type][ev.session] = ev.payload

    for kind in ("gap_open", "volume_spike", "volatility_spike", "earnings_surprise"):
        assert sorted(got[kind]) == sorted(want[kind]), kind
        assert want[kind], f"{symbol} should have some {kind} days in 12 years"
    for d, p in want["gap_open"].items():
        assert got["gap_open"][d]["gapPct"] == p["gapPct"]  # same formula, bit for bit
    for d, p in want["volume_spike"].items():
        assert got["volume_spike"][d]["volumeRatio"] == p["volumeRatio"]
    for d, p in want["volatility_spike"].items():
        assert got["volatility_spike"][d]["trRatio"] == pytest.approx(p["trRatio"], rel=1e-9)
    for d, p in want["earnings_surprise"].items():
        assert got["earnings_surprise"][d]["earningsDate"] == p["earningsDate"].isoformat()  # type: ignore[attr-defined]


def test_aapl_gaps_over_3pct_found_session_by_session(real_bars) -> None:
    """Replaying each session with lookback=1 finds exactly the days the raw rows say gapped > 3 %."""
    s = real_bars["AAPL"]
    dates, o, _, _, c, _ = rows(s)
    gap_days = [dates[t] for t in range(1, len(dates)) if abs((o[t] - c[t - 1]) / c[t - 1] * 100) > 3.0]
    assert len(gap_days) > 20
    cfg = DetectorConfig(enabled=["gap_open"])
    for d in gap_days[::5]:  # every 5th, to keep the test quick
        (ev,) = detect_events(s, [], cfg, as_of=d)
        assert ev.session == d
    # and a quiet day right before a gap day reports nothing
    quiet = next(
        dates[t - 1]
        for t in range(2, len(dates))
        if dates[t] in set(gap_days) and dates[t - 1] not in gap_days
    )
    assert detect_events(s, [], cfg, as_of=quiet) == []


def test_aapl_known_earnings_reaction(real_bars, real_reports) -> None:
    """AAPL reported after the close on 2017-11-02; the 2017-11-03 open gapped up ~3.5 %."""
    s = real_bars["AAPL"]
    assert EarningsReport(date=date(2017, 11, 2), release_time="post") in real_reports["AAPL"]
    # The report day itself is not the reaction: the numbers came out after its close.
    on_report_day = detect_events(s, real_reports["AAPL"], as_of=date(2017, 11, 2))
    assert "earnings_surprise" not in {e.type for e in on_report_day}
    events = detect_events(s, real_reports["AAPL"], as_of=date(2017, 11, 3))
    by_type = {e.type: e for e in events}
    assert {"gap_open", "earnings_surprise"} <= set(by_type)
    assert by_type["earnings_surprise"].payload["earningsDate"] == "2017-11-02"
    assert by_type["earnings_surprise"].payload["releaseTime"] == "post"
    assert by_type["earnings_surprise"].payload["direction"] == "up"
    assert by_type["gap_open"].payload["gapPct"] == pytest.approx(3.504, abs=1e-3)
    assert by_type["gap_open"].payload["prevClose"] == 167.51


def test_weekend_earnings_date_maps_to_next_session(real_bars, real_reports) -> None:
    """AJG's 2014-04-06 earnings date is a Sunday: Monday 2014-04-07 (volume ~3x) is its reaction."""
    s = real_bars["AJG"]
    assert date(2014, 4, 6) in [r.date for r in real_reports["AJG"]]
    assert date(2014, 4, 7) in reference_events(s, real_reports["AJG"])["earnings_surprise"]
    got = [
        e
        for e in detect_events(s, real_reports["AJG"], as_of=date(2014, 4, 7))
        if e.type == "earnings_surprise"
    ]
    assert [e.session for e in got] == [date(2014, 4, 7)]
    assert got[0].payload["earningsDate"] == "2014-04-06"
    assert got[0].payload["volumeRatio"] == pytest.approx(2.958, abs=1e-3)
