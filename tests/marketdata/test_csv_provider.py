"""CsvProvider on small generated files: folder mode, gz, formats, errors, side files."""

from __future__ import annotations

import gzip
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jax_assistant.marketdata import (
    CsvProvider,
    DataSourceError,
    EarningsReport,
    UnknownSymbolError,
    csv_provider,
)
from jax_assistant.marketdata.csv_provider import prefetch


def _days(n: int, start: date = date(2021, 3, 1)) -> list[date]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


def _rows(n: int, base: float) -> list[tuple[date, float, float, float, float, int]]:
    return [
        (d, base + i, base + i + 1, base + i - 1, base + i + 0.5, 1000 + i) for i, d in enumerate(_days(n))
    ]


def _long_csv(symbols: dict[str, float], n: int = 30) -> str:
    lines = ["symbol,date,open,high,low,close,volume"]
    for sym, base in symbols.items():
        lines += [f"{sym},{d},{o},{h},{lo},{c},{v}" for d, o, h, lo, c, v in _rows(n, base)]
    return "\n".join(lines) + "\n"


def _stooq_txt(base: float, n: int = 30, compact_dates: bool = False) -> str:
    lines = ["Date,Open,High,Low,Close,Volume,OpenInt"]
    for d, o, h, lo, c, v in _rows(n, base):
        day = d.strftime("%Y%m%d") if compact_dates else d.isoformat()
        lines.append(f"{day},{o},{h},{lo},{c},{v},0")
    return "\n".join(lines) + "\n"


def test_long_file_plain_and_gz_give_the_same_bars(tmp_path: Path) -> None:
    text = _long_csv({"AAA": 10.0, "BBB": 50.0})
    (tmp_path / "a.csv").write_text(text)
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(text.encode()))
    plain, packed = CsvProvider(tmp_path / "a.csv"), CsvProvider(tmp_path / "b.csv.gz")
    assert plain.symbols() == packed.symbols() == ["AAA", "BBB"]
    for sym in ("AAA", "BBB"):
        a, b = plain.bars(sym), packed.bars(sym)
        for field in ("dates", "open", "high", "low", "close", "volume"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert plain.bars("BBB").close[0] == 50.5
    assert plain.latest_date() == _days(30)[-1]
    assert plain.issues() == []


def test_folder_of_per_symbol_files(tmp_path: Path) -> None:
    (tmp_path / "aapl.us.txt").write_text(_stooq_txt(100.0))
    (tmp_path / "msft.csv.gz").write_bytes(gzip.compress(_stooq_txt(200.0, n=20).encode()))
    (tmp_path / "ibm.csv").write_text(_stooq_txt(150.0, compact_dates=True))  # YYYYMMDD dates
    (tmp_path / "mixed.csv").write_text(_long_csv({"XXX": 5.0, "YYY": 7.0}))  # has a symbol column
    (tmp_path / "empty.us.txt").write_text("")  # the stooq dump has empty files
    (tmp_path / "notes.md").write_text("not data")
    (tmp_path / "earnings_dates.csv").write_text("symbol,date\nAAPL,2021-03-15\nAAPL,2021-03-10\n")
    (tmp_path / "sectors.csv").write_text("symbol,sector\nAAPL,Information Technology\n")
    p = CsvProvider(tmp_path)
    assert p.symbols() == ["AAPL", "IBM", "MSFT", "XXX", "YYY"]
    assert len(p.bars("MSFT")) == 20
    assert p.bars("IBM").date_at(0) == date(2021, 3, 1)
    assert p.bars("YYY").close[0] == 7.5
    assert p.earnings_dates("AAPL") == [date(2021, 3, 10), date(2021, 3, 15)]
    assert p.sector("AAPL") == "Information Technology"
    (empty,) = p.issues("EMPTY")
    assert (empty.rule, empty.action) == ("empty_file", "symbol skipped")
    with pytest.raises(UnknownSymbolError):
        p.bars("EMPTY")


def test_folder_symbols_filter_never_reads_other_files(tmp_path: Path) -> None:
    (tmp_path / "aapl.us.txt").write_text(_stooq_txt(100.0))
    (tmp_path / "broken.us.txt").write_text("nothing,useful\n1,2\n")  # would fail if it were read
    p = CsvProvider(tmp_path, symbols=["aapl"])
    assert p.symbols() == ["AAPL"]
    with pytest.raises(DataSourceError, match=r"broken\.us\.txt"):
        CsvProvider(tmp_path)


def test_single_symbol_file_without_symbol_column(tmp_path: Path) -> None:
    f = tmp_path / "nvda.us.txt"
    f.write_text(_stooq_txt(30.0))
    assert CsvProvider(f).symbols() == ["NVDA"]


def test_explicit_side_files_win(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text(_long_csv({"AAA": 10.0}))
    (tmp_path / "earnings_dates.csv").write_text("symbol,date\nAAA,2021-01-01\n")
    other = tmp_path / "sub"
    other.mkdir()
    (other / "e.csv").write_text("symbol,date\nAAA,2021-02-02\n")
    (other / "s.csv").write_text("symbol,sector\nAAA,Energy\n")
    p = CsvProvider(tmp_path / "prices.csv", earnings_path=other / "e.csv", sectors_path=other / "s.csv")
    assert p.earnings_dates("AAA") == [date(2021, 2, 2)]
    assert p.sector("AAA") == "Energy"
    auto = CsvProvider(tmp_path / "prices.csv")
    assert auto.earnings_dates("AAA") == [date(2021, 1, 1)]
    assert auto.sector("AAA") is None  # no sectors.csv beside it
    with pytest.raises(DataSourceError, match="missing_earnings"):
        CsvProvider(tmp_path / "prices.csv", earnings_path=tmp_path / "missing_earnings.csv")


def test_missing_path_columns_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"nope\.csv"):
        CsvProvider(tmp_path / "nope.csv")
    f = tmp_path / "cols.csv"
    f.write_text("symbol,date,open,high\nAAA,2021-01-04,1,2\n")
    with pytest.raises(DataSourceError, match=r"cols\.csv.*low, close, volume"):
        CsvProvider(f)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataSourceError, match="empty"):
        CsvProvider(empty)
    folder = tmp_path / "nothing"
    folder.mkdir()
    with pytest.raises(DataSourceError, match="no data files"):
        CsvProvider(folder)


def test_padded_and_empty_cells(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text(
        "symbol,date,open,high,low,close,volume\n"
        " aaa , 2021-03-01 , 10 , 11 , 9 , 10.5 , 100 \n"  # padding is tolerated (slow path)
        "AAA,2021-03-02,10,11,9,,100\n"  # empty close: missing -> nan_value, not unparseable
        "AAA,2021-03-03,10,11,9,10.5,100\n"
        "AAA,1850-01-01,10,11,9,10.5,100\n"  # implausible date
    )
    p = CsvProvider(f)
    s = p.bars("AAA")
    assert [s.date_at(i) for i in range(len(s))] == [date(2021, 3, 1), date(2021, 3, 3)]
    rules = sorted(i.rule for i in p.issues("AAA"))
    assert rules == ["nan_value", "unparseable"]


def test_bars_are_cached_and_read_only(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text(_long_csv({"AAA": 10.0}))
    p = CsvProvider(f)
    s = p.bars("AAA")
    assert p.bars("aaa") is s
    with pytest.raises(ValueError):
        s.close[0] = 0.0
    assert len(p.bars("AAA", as_of=_days(30)[9])) == 10


def test_earnings_details_beside_the_data_are_preferred(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text(_long_csv({"AAA": 10.0}))
    (tmp_path / "earnings_dates.csv").write_text("symbol,date\nAAA,2021-01-01\n")
    (tmp_path / "earnings_details.csv").write_text(
        "symbol,date,release_time,qtr,eps_est,eps\n"
        "AAA,2021-03-04,post,21-Feb,0.5,0.61\n"
        "AAA,2021-03-11,AMC,21-Feb,,\n"  # the bmo/amc spelling
        "AAA,2021-03-18,,21-Feb,bad,1\n"  # no release time: unknown
        "AAA,2021-03-04,pre,21-Feb,0.5,0.61\n"  # a second row for a date: the first one wins
    )
    p = CsvProvider(tmp_path / "prices.csv")
    assert p.earnings_reports("aaa") == [
        EarningsReport(date=date(2021, 3, 4), release_time="post", eps_estimate=0.5, eps=0.61),
        EarningsReport(date=date(2021, 3, 11), release_time="post"),
        EarningsReport(date=date(2021, 3, 18), release_time=None, eps=1.0),
    ]
    assert p.earnings_dates("AAA") == [date(2021, 3, 4), date(2021, 3, 11), date(2021, 3, 18)]


def test_bars_as_of_are_cleaned_from_rows_up_to_as_of_only(tmp_path: Path) -> None:
    rows = _rows(30, 100.0)
    lines = ["symbol,date,open,high,low,close,volume"]
    for i, (d, o, h, lo, c, v) in enumerate(rows):
        k = 10.0 if i >= 20 else 1.0  # a x10 level change on bar 20 that the later bars confirm
        lines.append(f"AAA,{d},{o * k},{h * k},{lo * k},{c * k},{v}")
    (tmp_path / "p.csv").write_text("\n".join(lines) + "\n")
    p = CsvProvider(tmp_path / "p.csv")
    day20, day21 = rows[20][0], rows[21][0]
    on_the_day = p.bars("AAA", day20)  # nothing after bar 20 yet: an unconfirmed bad tick
    assert on_the_day.last_date == rows[19][0]
    (issue,) = on_the_day.issues
    assert (issue.rule, issue.date) == ("bad_tick", day20) and "unconfirmed" in issue.detail
    later = p.bars("AAA", day21)  # bar 21 stayed at the new level: bar 20 is real
    assert later.last_date == day21 and later.issues == ()
    assert np.datetime64(day20) in p.bars("AAA").dates
    assert p.bars("AAA", day20) is on_the_day  # cached per cut
    assert p.bars("AAA", rows[0][0] - timedelta(days=3)).dates.size == 0


# ----------------------------------------------------------------------------- prefetch


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    reads: list[Path] = []
    real = csv_provider._read_typed

    def counted(path: Path) -> Any:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(csv_provider, "_read_typed", counted)
    return reads


def _wait_prefetched() -> None:
    for future in list(csv_provider._prefetched.values()):
        future.exception(timeout=30)  # the read finished (well or not)


def test_a_prefetched_file_is_read_once_and_gives_the_same_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bars.csv.gz"
    path.write_bytes(gzip.compress(_long_csv({"AAA": 10.0, "BBB": 20.0}).encode()))
    plain = CsvProvider(path)
    reads = _count_reads(monkeypatch)
    prefetch(path)
    _wait_prefetched()
    p = CsvProvider(path)
    assert reads == [path]  # the thread's read, none by the provider
    assert p.load_mode == "typed"
    for sym in ("AAA", "BBB"):
        assert np.array_equal(p.bars(sym).close, plain.bars(sym).close)
        assert np.array_equal(p.bars(sym).dates, plain.bars(sym).dates)
    CsvProvider(path)
    assert reads == [path, path]  # taken once: a later provider reads the file itself


def test_a_file_changed_after_its_prefetch_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(_long_csv({"AAA": 10.0}))
    prefetch(path)
    _wait_prefetched()
    path.write_text(_long_csv({"AAA": 10.0, "CCC": 30.0}))
    assert CsvProvider(path).symbols() == ["AAA", "CCC"]


def test_a_prefetched_bad_file_takes_the_text_path_as_without_prefetch(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(_long_csv({"AAA": 10.0}) + "AAA,2021-05-03,oops,1,1,1,1\n")
    prefetch(path)
    _wait_prefetched()
    p = CsvProvider(path)
    assert p.load_mode == "text"
    assert [i.rule for i in p.issues("AAA")] == [i.rule for i in CsvProvider(path).issues("AAA")]
    assert p.issues("AAA")


@pytest.mark.parametrize("order", ["sorted", "reversed", "interleaved"])
def test_rows_in_any_symbol_order_give_each_symbol_its_rows_in_file_order(tmp_path: Path, order: str) -> None:
    rows = _long_csv({"AAA": 10.0, "BBB": 50.0, "CCC": 90.0}, n=12).splitlines()
    header, body = rows[0], rows[1:]
    if order == "reversed":
        body = body[::-1]  # symbols and dates descending: each symbol one block, blocks out of order
    elif order == "interleaved":
        body = body[0::2] + body[1::2]  # every symbol in two separate blocks
    (tmp_path / "bars.csv").write_text("\n".join([header, *body]) + "\n")
    provider = CsvProvider(tmp_path / "bars.csv")
    assert provider.symbols() == ["AAA", "BBB", "CCC"]
    for sym, base in (("AAA", 10.0), ("BBB", 50.0), ("CCC", 90.0)):
        mine = [r for r in body if r.startswith(sym + ",")]  # this symbol's rows, in file order
        raw = provider._frames[sym]
        assert [str(d) for d in raw.dates] == [r.split(",")[1] for r in mine]
        assert raw.cols[0].tolist() == [float(r.split(",")[2]) for r in mine]
        bars = provider.bars(sym)
        assert bars.open.tolist() == [base + i for i in range(12)]  # cleaned: by date


def test_the_prefetch_thread_also_splits_the_rows_per_symbol_and_a_filtered_provider_loads_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(_long_csv({"AAA": 10.0, "BBB": 20.0}))
    plain = CsvProvider(path)
    threads: list[str] = []
    real = csv_provider._by_symbol

    def recorded(df: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(df)

    monkeypatch.setattr(csv_provider, "_by_symbol", recorded)
    prefetch(path)
    _wait_prefetched()
    assert threads == ["jax-csv-prefetch"]
    assert CsvProvider(path, symbols=["AAA"]).symbols() == ["AAA"]  # not the prefetched (every symbol)
    p = CsvProvider(path)
    assert threads == ["jax-csv-prefetch", "MainThread"]  # the filtered one split its own rows
    assert p.symbols() == ["AAA", "BBB"] and p.load_mode == "typed"
    assert p.latest_date() == plain.latest_date()
    for sym in ("AAA", "BBB"):
        assert np.array_equal(p.bars(sym).close, plain.bars(sym).close)


@pytest.mark.parametrize("explicit", [False, True])
def test_prefetched_side_files_give_the_same_earnings_sectors_and_issues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, explicit: bool
) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(_long_csv({"AAA": 10.0, "BBB": 20.0}))
    side = tmp_path / "side" if explicit else tmp_path
    side.mkdir(exist_ok=True)
    (side / "earnings_details.csv").write_text(
        "symbol,date,release_time\nAAA,2021-03-04,post\nBBB,not-a-date,pre\nBBB,2021-03-05,pre\n"
    )
    (side / "sectors.csv").write_text("symbol,sector\nAAA,Energy\nBBB,\nBBB,Utilities\n")
    given: dict[str, Any] = (
        {"earnings_path": side / "earnings_details.csv", "sectors_path": side / "sectors.csv"}
        if explicit
        else {}
    )
    plain = CsvProvider(path, **given)
    threads: list[str] = []
    for name in ("load_earnings_reports", "load_sectors"):
        real = getattr(csv_provider, name)

        def recorded(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return _real(*args, **kwargs)

        recorded.__name__ = name
        monkeypatch.setattr(csv_provider, name, recorded)
    prefetch(path, **given)
    _wait_prefetched()
    for future in list(csv_provider._prefetched_side.values()):
        future.exception(timeout=30)
    p = CsvProvider(path, **given)
    assert threads == ["jax-csv-prefetch", "jax-csv-prefetch"]  # none loaded again by the provider
    for sym in ("AAA", "BBB"):
        assert p.earnings_reports(sym) == plain.earnings_reports(sym) != []
        assert p.sector(sym) == plain.sector(sym) is not None
    assert p.issues() == plain.issues() != []  # the bad rows, reported once, in the same order


def test_side_files_added_after_a_data_only_prefetch_load_after_the_data_and_are_taken_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(_long_csv({"AAA": 10.0, "BBB": 20.0}))
    side = tmp_path / "side"
    side.mkdir()
    (side / "earnings_dates.csv").write_text("symbol,date\nAAA,2021-03-04\nBBB,oops\n")
    (side / "sectors.csv").write_text("symbol,sector\nAAA,Energy\nBBB,Utilities\n")
    given: dict[str, Any] = {
        "earnings_path": side / "earnings_dates.csv",
        "sectors_path": side / "sectors.csv",
    }
    plain = CsvProvider(path, **given)
    order: list[tuple[str, str]] = []
    release = threading.Event()
    real_load = csv_provider._typed_load

    def slow_load(*args: Any) -> Any:
        release.wait(10)  # the side files are registered while the data file is still loading
        out = real_load(*args)
        order.append(("data", threading.current_thread().name))
        return out

    monkeypatch.setattr(csv_provider, "_typed_load", slow_load)
    for name in ("load_earnings_reports", "load_sectors"):
        real = getattr(csv_provider, name)

        def recorded(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            order.append((_name, threading.current_thread().name))
            return _real(*args, **kwargs)

        recorded.__name__ = name
        monkeypatch.setattr(csv_provider, name, recorded)
    prefetch(path, sides=False)
    assert not csv_provider._prefetched_side  # the data file only
    csv_provider.prefetch_sides(path, **given)
    release.set()
    _wait_prefetched()
    for future in list(csv_provider._prefetched_side.values()):
        future.exception(timeout=30)
    p = CsvProvider(path, **given)
    assert order == [  # the data first, then the side files on their own thread, none by the provider
        ("data", "jax-csv-prefetch"),
        ("load_earnings_reports", "jax-csv-prefetch-sides"),
        ("load_sectors", "jax-csv-prefetch-sides"),
    ]
    assert p.load_mode == "typed"
    for sym in ("AAA", "BBB"):
        assert np.array_equal(p.bars(sym).close, plain.bars(sym).close)
        assert p.earnings_reports(sym) == plain.earnings_reports(sym)
        assert p.sector(sym) == plain.sector(sym) is not None
    assert p.issues() == plain.issues() != []


def test_a_missing_explicit_side_file_still_fails_the_provider_after_a_prefetch(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(_long_csv({"AAA": 10.0}))
    prefetch(path, earnings_path=tmp_path / "missing_earnings.csv")
    _wait_prefetched()
    with pytest.raises(DataSourceError, match="missing_earnings"):
        CsvProvider(path, earnings_path=tmp_path / "missing_earnings.csv")


def test_a_provider_that_takes_a_side_file_before_the_thread_loaded_it_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(_long_csv({"AAA": 10.0}))
    (tmp_path / "earnings_dates.csv").write_text("symbol,date\nAAA,2021-01-01\n")
    real = csv_provider.load_earnings_reports

    def late(p: Path, *, issues: Any = None) -> Any:
        deadline = time.monotonic() + 10
        while csv_provider._prefetched_side and time.monotonic() < deadline:
            time.sleep(0.005)  # until the provider has taken the pending load
        return real(p, issues=issues)

    late.__name__ = "load_earnings_reports"
    monkeypatch.setattr(csv_provider, "load_earnings_reports", late)
    prefetch(path)
    built: list[CsvProvider] = []
    thread = threading.Thread(target=lambda: built.append(CsvProvider(path)), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the provider waits for a load nobody will finish"
    assert built[0].earnings_dates("AAA") == [date(2021, 1, 1)]
