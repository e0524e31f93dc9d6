"""`jax run` end to end through the CLI: sample market, real data, replays, bad input, bad data."""

from __future__ import annotations

import csv
import gzip
import json
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jax_assistant.cli import app
from jax_assistant.marketdata.sample import SAMPLE_LAST_SESSION


def run_json(runner: CliRunner, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["run", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def db_rows(env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(Path(env["JAX_DATA_DIR"]) / "jax.db") as conn:
        return conn.execute(sql).fetchall()


# ----------------------------------------------------------------------------- sample market


def test_first_command_runs_the_sample_market_offline(runner: CliRunner, jax_env: dict[str, str]) -> None:
    """The README's first command on a fresh install: every sample symbol, every kind of outcome."""
    result = runner.invoke(app, ["run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "SIMULATED" in result.output  # never mistaken for real data
    assert "succeeded" in result.output

    payload = run_json(runner)
    run = payload["run"]
    assert run["simulated"] is True and run["provider"] == "sample"
    assert run["asOf"] == SAMPLE_LAST_SESSION.isoformat()
    symbols = payload["symbols"]
    assert len(symbols) == len(run["symbols"]) >= 15
    assert all(s["symbol"].endswith(".SIM") for s in symbols)
    assert {s["status"] for s in symbols} == {"succeeded"}
    event_types = {e["type"] for s in symbols for e in s["events"]}
    assert event_types == {"gap_open", "volume_spike", "volatility_spike", "earnings_surprise"}
    trades = [t for s in symbols for t in s["trades"]]
    strategies = {t["setup"]["strategyId"] for t in trades}
    assert {"earnings_gap_v1", "volatility_spike_v1"} <= strategies
    assert strategies & {"rsi_momentum_v1", "macd_crossover_v1", "ma_crossover_v1"}
    decisions = {t["risk"]["constraints"]["allowed"] for t in trades}
    assert decisions == {True, False}  # the busy last session shows both allowed and rejected setups
    clamps = {a["rule"] for t in trades for a in t["risk"]["constraints"]["adjustments"]}
    assert "max_risk_per_trade" in clamps  # the contract's 3 % default clamped to the 2 % cap
    for t in trades:
        setup, risk = t["setup"], t["risk"]
        assert setup["id"].startswith(f"ts_{setup['strategyId']}_{setup['symbol']}_")
        if risk["constraints"]["allowed"]:
            assert risk["positionSize"] > 0
            assert risk["riskPerUnit"] == pytest.approx(abs(setup["entry"] - setup["stop"]))
            assert risk["totalRisk"] == pytest.approx(risk["positionSize"] * risk["riskPerUnit"])
            assert risk["totalRisk"] <= 10_000 * 0.02 + 1e-6
        else:
            assert risk["positionSize"] == 0 and risk["constraints"]["violations"]

    # Everything was stored, flagged simulated.
    assert db_rows(jax_env, "select count(*) from runs where simulated = 0") == [(0,)]
    assert db_rows(jax_env, "select count(*) from trades where simulated = 0") == [(0,)]
    assert db_rows(jax_env, "select count(*) from trades")[0][0] == len(trades)


def test_sample_replay_stores_nothing_twice(runner: CliRunner, jax_env: dict[str, str]) -> None:
    first = run_json(runner)
    counts = [db_rows(jax_env, f"select count(*) from {t}")[0][0] for t in ("events", "trades")]
    second = run_json(runner)
    assert [db_rows(jax_env, f"select count(*) from {t}")[0][0] for t in ("events", "trades")] == counts
    assert db_rows(jax_env, "select count(*) from runs") == [(2,)]
    ids = lambda p: sorted(t["setup"]["id"] for s in p["symbols"] for t in s["trades"])  # noqa: E731
    assert ids(first) == ids(second)


def test_runs_and_trades_commands(runner: CliRunner, jax_env: dict[str, str]) -> None:
    payload = run_json(runner, "ACME.SIM", "ZEST.SIM", "--lookback", "3")
    run_id = payload["run"]["id"]
    listed = runner.invoke(app, ["runs", "list"], catch_exceptions=False)
    assert listed.exit_code == 0 and run_id in listed.output
    shown = runner.invoke(app, ["runs", "show", run_id, "--json"], catch_exceptions=False)
    assert json.loads(shown.stdout)["run"]["id"] == run_id
    assert sorted(s["symbol"] for s in json.loads(shown.stdout)["symbols"]) == ["ACME.SIM", "ZEST.SIM"]
    trades = runner.invoke(app, ["trades", "list", "--symbol", "zest.sim", "--json"], catch_exceptions=False)
    stored = json.loads(trades.stdout)
    expected = [t for s in payload["symbols"] if s["symbol"] == "ZEST.SIM" for t in s["trades"]]
    assert sorted(t["setup"]["id"] for t in stored) == sorted(t["setup"]["id"] for t in expected)
    missing = runner.invoke(app, ["runs", "show", "run_nope"])
    assert missing.exit_code == 2 and "no run 'run_nope'" in missing.output


def test_watchlist_file(runner: CliRunner, jax_env: dict[str, str], tmp_path: Path) -> None:
    wl = tmp_path / "watch.txt"
    wl.write_text("# my list\nACME.SIM, BOLT.SIM\n\nzest.sim  # earnings today\n")
    payload = run_json(runner, "--watchlist", str(wl))
    assert payload["run"]["symbols"] == ["ACME.SIM", "BOLT.SIM", "ZEST.SIM"]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as-of", "2017-13-01"], "is not a date"),
        (["--as-of", "2099-01-02"], "is after the last session"),
        (["NOPE.SIM"], "unknown symbol(s)"),
        (["--provider", "bogus"], "--provider must be"),
        (["--data", "/no/such/file.csv"], "no such file"),
        (["--watchlist", "/no/such/list.txt"], "cannot read watchlist"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    runner: CliRunner, jax_env: dict[str, str], args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_unknown_symbol_suggests_and_skip_unknown_runs_the_others(
    runner: CliRunner, jax_env: dict[str, str]
) -> None:
    only_unknown = runner.invoke(app, ["run", "ACME.SMI"])
    assert only_unknown.exit_code == 2 and "did you mean ACME.SIM" in only_unknown.output
    mixed = runner.invoke(app, ["run", "ACME.SIM", "NOPE"])
    assert mixed.exit_code == 2 and "NOPE" in mixed.output  # refused unless asked to skip
    payload = run_json(runner, "ACME.SIM", "NOPE", "--skip-unknown")
    assert payload["unknownSymbols"] == ["NOPE"]
    assert [s["symbol"] for s in payload["symbols"]] == ["ACME.SIM"]


def test_unreadable_data_file_exits_2(runner: CliRunner, jax_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("ticker,when,price\nX,2020-01-01,3\n")
    result = runner.invoke(app, ["run", "--data", str(bad)])
    assert result.exit_code == 2
    assert "missing" in result.output.lower() and "symbol" in result.output


# ----------------------------------------------------------------------------- real data


def _raw_rows(path: Path, symbol: str) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", newline="") as fh:
        return [
            {
                "date": date.fromisoformat(r["date"]),
                **{k: float(r[k]) for k in ("open", "high", "low", "close", "volume")},
            }
            for r in csv.DictReader(fh)
            if r["symbol"] == symbol
        ]


def _expected_events(
    rows: list[dict[str, Any]], earnings: list[tuple[date, str]], as_of: date, lookback: int
) -> set[tuple]:
    """Independent, loop-based computation of the default detectors (gap 3 %, volume 2.5x over the 20
    prior sessions, true range 2x the prior Wilder ATR14, earnings reaction = report day or next session
    with a 2 % gap or 1.5x volume)."""
    rows = [r for r in rows if r["date"] <= as_of]
    trs, atrs = [], []
    for i, r in enumerate(rows):
        tr = (
            r["high"] - r["low"]
            if i == 0
            else max(r["high"], rows[i - 1]["close"]) - min(r["low"], rows[i - 1]["close"])
        )
        trs.append(tr)
        if i < 13:
            atrs.append(None)
        elif i == 13:
            atrs.append(sum(trs) / 14)
        else:
            atrs.append((atrs[-1] * 13 + tr) / 14)
    out: set[tuple] = set()
    dates = [r["date"] for r in rows]
    for i in range(len(rows) - lookback, len(rows)):
        r, p = rows[i], rows[i - 1]
        gap = (r["open"] - p["close"]) / p["close"] * 100
        if abs(gap) >= 3 - 1e-9:
            out.add(("gap_open", r["date"]))
        prior = [x["volume"] for x in rows[i - 20 : i]]
        ratio = r["volume"] / (sum(prior) / 20) if i >= 20 and sum(prior) > 0 else None
        if ratio is not None and ratio >= 2.5 - 1e-9:
            out.add(("volume_spike", r["date"]))
        if atrs[i - 1] and trs[i] / atrs[i - 1] >= 2 - 1e-9:
            out.add(("volatility_spike", r["date"]))
        # earnings: one reaction bar per report -- the first bar on/after the date if it came before
        # the open, the first bar after it if it came after the close (earnings_details.csv)
        reaction = any(
            (d < r["date"] and d >= dates[i - 1])
            if release == "post"
            else (d <= r["date"] and d > dates[i - 1])
            for d, release in earnings
        )
        if i >= 20 and reaction and (abs(gap) >= 2 - 1e-9 or (ratio is not None and ratio >= 1.5 - 1e-9)):
            out.add(("earnings_surprise", r["date"]))
    return out


@pytest.mark.realdata
def test_real_data_detections_match_an_independent_computation(
    runner: CliRunner, jax_env: dict[str, str], real_subset: Path
) -> None:
    as_of, lookback = date(2017, 11, 3), 40
    symbols = ["AAPL", "MSFT", "AMZN", "NFLX", "JPM"]
    payload = run_json(
        runner,
        *symbols,
        "--data",
        str(real_subset),
        "--as-of",
        as_of.isoformat(),
        "--lookback",
        str(lookback),
    )
    assert payload["run"]["simulated"] is False and payload["run"]["provider"] == "csv"
    with open(real_subset.parent / "earnings_details.csv", newline="") as fh:
        earnings = [
            (r["symbol"], date.fromisoformat(r["date"]), r["release_time"]) for r in csv.DictReader(fh)
        ]
    by_symbol = {s["symbol"]: s for s in payload["symbols"]}
    total = 0
    for sym in symbols:
        got = {(e["type"], date.fromisoformat(e["time"][:10])) for e in by_symbol[sym]["events"]}
        expected = _expected_events(
            _raw_rows(real_subset, sym), [(d, t) for s, d, t in earnings if s == sym], as_of, lookback
        )
        assert got == expected, sym
        total += len(got)
    assert total >= 5  # the window holds real earnings reactions (AAPL, AMZN, MSFT reported in it)
    aapl_types = {e["type"] for e in by_symbol["AAPL"]["events"]}
    assert "earnings_surprise" in aapl_types  # AAPL reported 2017-11-02 after the close


@pytest.mark.realdata
def test_real_replay_of_one_date_stored_twice_yields_one_set_of_rows(
    runner: CliRunner, jax_env: dict[str, str], real_subset: Path
) -> None:
    args = ["AAPL", "AMZN", "MSFT", "--data", str(real_subset), "--as-of", "2017-10-27", "--lookback", "5"]
    first = run_json(runner, *args)
    tables = ("events", "trades", "audit_events", "stage_checkpoints", "symbol_results")
    before = {t: db_rows(jax_env, f"select count(*) from {t}")[0][0] for t in tables}
    assert before["events"] > 0 and before["trades"] > 0
    second = run_json(runner, *args)
    after = {t: db_rows(jax_env, f"select count(*) from {t}")[0][0] for t in tables}
    assert after["events"] == before["events"]
    assert after["trades"] == before["trades"]
    # Per-run bookkeeping belongs to the new run; the market facts are not duplicated.
    assert after["symbol_results"] == 2 * before["symbol_results"]
    assert db_rows(
        jax_env, "select count(*) from (select id from trades group by id having count(*) > 1)"
    ) == [(0,)]
    events = lambda p: sorted(e["id"] for s in p["symbols"] for e in s["events"])  # noqa: E731
    assert events(first) == events(second)


@pytest.mark.realdata
def test_bad_real_data_is_reported_and_skipped_per_symbol(
    runner: CliRunner, jax_env: dict[str, str], real_subset: Path, tmp_path: Path
) -> None:
    """A corrupted copy of a real file: bad rows skipped and reported, an unusable symbol fails alone."""
    rows = _raw_rows(real_subset, "MSFT")[-300:]
    path = tmp_path / "corrupt.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["symbol", "date", "open", "high", "low", "close", "volume"])
        for i, r in enumerate(rows):
            vals = [r["open"], r["high"], r["low"], r["close"], int(r["volume"])]
            if i == 100:
                vals[3] = float("nan")
            if i == 120:
                vals[0] = 0
            if i == 140:
                vals[1], vals[2] = vals[2] - 1, vals[1] + 1  # high < low
            w.writerow(["MSFT", r["date"].isoformat(), *vals])
            if i == 160:
                w.writerow(["MSFT", r["date"].isoformat(), *vals])  # duplicate date
        w.writerow(["MSFT", "not-a-date", 1, 2, 0.5, 1, 10])
        for r in rows[:50]:
            w.writerow(["BROKE", r["date"].isoformat(), -1, -1, -1, -1, 0])
    result = runner.invoke(
        app, ["run", "MSFT", "BROKE", "--data", str(path), "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    by_symbol = {s["symbol"]: s for s in json.loads(result.stdout)["symbols"]}
    assert by_symbol["MSFT"]["status"] == "succeeded"
    issues = " ".join(by_symbol["MSFT"]["dataIssues"])
    for rule in ("nan_value", "non_positive_price", "high_below_low", "duplicate_date"):
        assert rule in issues, rule
    assert by_symbol["BROKE"]["status"] == "failed"
    assert "BROKE" in by_symbol["BROKE"]["error"]
    check = runner.invoke(app, ["data", "check", "--data", str(path)], catch_exceptions=False)
    assert check.exit_code == 0 and "unparseable" in check.output and "BROKE" in check.output


# ----------------------------------------------------------------------------- the console script


@pytest.mark.slow
def test_console_script_end_to_end(jax_env: dict[str, str], tmp_path: Path) -> None:
    """The installed `jax` entry point itself, as a user types it."""
    proc = subprocess.run(
        [sys.executable, "-m", "jax_assistant", "run", "ACME.SIM", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["run"]["symbols"] == ["ACME.SIM"]
