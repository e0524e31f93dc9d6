"""Daily bars from CSV files: one long-format file, or a folder of per-symbol files.

The whole source is read once with polars at construction (every column as text, so one bad cell
costs one reported row instead of the load); each symbol is cleaned by :func:`clean_series` only on
its first ``bars()`` call and cached, so opening the 1.5 M-row sp500 file and asking for three symbols
does not pay for cleaning 505.

Cleaning is causal: ``bars(symbol, as_of)`` cleans the raw rows dated <= ``as_of`` (cached per
symbol and cut), never the whole file, so a run as of D gives the same bars and issues whether the
file ends at D or goes on.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from pathlib import Path
from time import perf_counter
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl

from jax_assistant.marketdata.base import (
    BarSeries,
    DataIssue,
    DataSourceError,
    EarningsReport,
    UnknownSymbolError,
)
from jax_assistant.marketdata.calendar import (
    PLAUSIBLE_DATES,
    clean_symbol,
    is_ticker,
    load_earnings_reports,
    load_sectors,
    normalize_column,
    parse_date,
    raw_header,
    read_header,
    scan_strings,
    symbol_from_filename,
)
from jax_assistant.marketdata.validation import BadSymbolError, clean_series

__all__ = ["CsvProvider"]

VALUE_COLUMNS = ("open", "high", "low", "close", "volume")
BAR_COLUMNS = ("date", *VALUE_COLUMNS)
DATA_SUFFIXES = (".csv", ".csv.gz", ".txt")
EARNINGS_FILE = "earnings_dates.csv"
EARNINGS_DETAILS_FILE = "earnings_details.csv"  # the same dates plus release_time; preferred
SECTORS_FILE = "sectors.csv"
_T = TypeVar("_T")
# The typed fast path of the loader: a file whose cells all parse as these is read in one go.
_TYPES: dict[str, pl.DataType] = {"date": pl.Date(), **{c: pl.Float64() for c in VALUE_COLUMNS}}
_AS_OF_CACHE = 2  # cleaned as-of cuts kept per symbol, besides the whole history (a run needs one)
# Side files that may sit next to the price files but are not price files themselves.
METADATA_FILES = frozenset({EARNINGS_FILE, SECTORS_FILE, EARNINGS_DETAILS_FILE, "anomalies.csv"})


class CsvProvider:
    """Real (or user-supplied) daily bars from CSV. ``simulated`` is False.

    ``path``: a long-format file (``symbol,date,open,high,low,close,volume``; plain or ``.gz``; any
    column order; extra columns ignored) or a folder of ``*.csv`` / ``*.csv.gz`` / ``*.txt`` files,
    one symbol each (from a ``symbol`` column, else the file name before the first dot, upper-cased:
    ``aapl.us.txt`` -> ``AAPL``). ``symbols`` limits what is loaded. ``earnings_details.csv`` (with
    release times; else ``earnings_dates.csv``) and ``sectors.csv`` next to the data (beside the
    file, or inside the folder) are used unless paths are given.
    """

    name = "csv"
    simulated = False

    def __init__(
        self,
        path: Path | str,
        *,
        earnings_path: Path | str | None = None,
        sectors_path: Path | str | None = None,
        symbols: Iterable[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._wanted = None if symbols is None else frozenset(s.strip().upper() for s in symbols)
        self._lock = threading.Lock()
        # Cleaned series per symbol and as-of cut (None = the whole history); see _series.
        self._cache: dict[str, dict[date | None, BarSeries]] = {}
        self._bad: dict[tuple[str, date | None], BadSymbolError] = {}
        self._load_issues: list[DataIssue] = []  # problems not tied to one loadable symbol
        self._row_issues: dict[str, list[DataIssue]] = {}  # unparseable rows, per symbol
        self.load_mode = "none"  # "typed" (fast path), "text" (a cell did not parse typed) or "none"

        started = perf_counter()
        self._frames, self._latest = self._load()
        self._symbols = sorted(set(self._frames) | set(self._row_issues))
        self.load_seconds = perf_counter() - started
        self._known = frozenset(self._symbols)  # what bars() accepts (set lookup)

        if self._wanted is not None:
            for sym in sorted(self._wanted - set(self._symbols)):
                detail = f"requested but not in {self.path}"
                self._load_issues.append(DataIssue(sym, None, "unknown_symbol", detail, "symbol skipped"))

        earnings, sectors = _side_paths(self.path, earnings_path, sectors_path)
        self._earnings = self._side_file(earnings, load_earnings_reports)
        self._sectors = self._side_file(sectors, load_sectors)

    # ------------------------------------------------------------------ loading

    def _side_file(self, path: Path | None, loader: _Loader[_T]) -> dict[str, _T]:
        if path is None:
            return {}
        ahead = _take_prefetched_side(path, loader)
        if ahead is not None:  # loaded by `prefetch`, into its own issue list
            loaded, issues = ahead.result()
            self._load_issues.extend(issues)
            return loaded
        return loader(path, issues=self._load_issues)

    def _files(self) -> list[tuple[Path, bool]]:
        """The data files to read and whether each has a symbol column (empty files are reported)."""
        if not self.path.exists():
            raise DataSourceError(f"market data path not found: {self.path}")
        if self.path.is_file():
            files = [self.path]
        else:
            files = sorted(
                f
                for f in self.path.iterdir()
                if f.is_file() and f.name.lower().endswith(DATA_SUFFIXES) and f.name not in METADATA_FILES
            )
            if not files:
                raise DataSourceError(f"no data files (*.csv, *.csv.gz, *.txt) in folder {self.path}")
        out: list[tuple[Path, bool]] = []
        for f in files:
            header = read_header(f)
            if not header and self.path.is_dir():
                # Per-symbol dumps (the stooq/Kaggle one included) contain empty files: skip, don't abort.
                sym = symbol_from_filename(f)
                self._load_issues.append(
                    DataIssue(sym, None, "empty_file", f"{f} is empty", "symbol skipped")
                )
                continue
            has_symbol = "symbol" in header
            if not has_symbol and self._wanted is not None and symbol_from_filename(f) not in self._wanted:
                continue  # filter early: never parse a per-symbol file that was not asked for
            if not header:
                scan_strings(f, BAR_COLUMNS)  # raises the "empty file" error for a single file
            out.append((f, has_symbol))
        return out

    def _sources(self, files: list[tuple[Path, bool]]) -> list[pl.LazyFrame]:
        """One lazy text frame per data file with columns symbol, _file, _line and BAR_COLUMNS."""
        out: list[pl.LazyFrame] = []
        for f, has_symbol in files:
            # Without a symbol column the file is one symbol's bars, named after the file (also when the
            # path is a single file such as aapl.us.txt).
            lf = scan_strings(f, BAR_COLUMNS)
            symbol = pl.col("symbol") if has_symbol else pl.lit(symbol_from_filename(f))
            out.append(
                lf.with_row_index("_line", offset=2).select(
                    symbol.alias("symbol"),
                    pl.lit(f.name).alias("_file"),
                    pl.col("_line"),
                    *(pl.col(c) for c in BAR_COLUMNS),
                )
            )
        return out

    def _load(self) -> _Loaded:
        files = self._files()
        if not files:
            return {}, None
        # What `prefetch` loaded on its thread (the same typed load), for the one file it reads ahead.
        ahead = _take_prefetched(*files[0]) if self._wanted is None and len(files) == 1 else None
        loaded = ahead.result() if ahead is not None else _typed_load(files, self._wanted)
        self.load_mode = "typed"
        if loaded is None:
            loaded = _grouped(self._load_text(files))
            self.load_mode = "text"
        return loaded

    def _load_text(self, files: list[tuple[Path, bool]]) -> pl.DataFrame:
        """Every cell as text, then parsed leniently: a bad cell costs its row (reported), not the load."""
        lf = pl.concat(self._sources(files), how="vertical").with_columns(clean_symbol().alias("symbol"))
        if self._wanted is not None:
            lf = lf.filter(pl.col("symbol").is_in(list(self._wanted)))
        # Fast path over all rows: the plain ISO date and number formats of the common case...
        iso = pl.col("date").str.to_date("%Y-%m-%d", strict=False)
        df = lf.with_columns(
            iso.alias("d"), *(pl.col(c).cast(pl.Float64, strict=False).alias(f"_{c}") for c in VALUE_COLUMNS)
        ).collect()
        # ...then the lenient parsers (padding, YYYYMMDD, a time part) only on the rows it failed: trying
        # every format on 1.5 M rows would double the load time for nothing.
        failed = pl.any_horizontal(_lost(c) for c in BAR_COLUMNS)
        retry = df.with_row_index("_i").filter(failed)
        if retry.height:
            again = retry.select(
                "_i", parse_date("date").alias("d"), *(_to_float(c).alias(f"_{c}") for c in VALUE_COLUMNS)
            )
            df = df.with_columns(df[k].scatter(again["_i"], again[k]) for k in again.columns[1:])
        df = df.with_columns(pl.when(pl.col("d").is_between(*PLAUSIBLE_DATES)).then(pl.col("d")).alias("d"))

        # A cell is unparseable if it had text that did not convert (_lost); an empty cell is "missing"
        # and is left to clean_series (rule nan_value).
        bad_cols = [f"_bad_{c}" for c in BAR_COLUMNS]
        df = df.with_columns(_lost(c).alias(f"_bad_{c}") for c in BAR_COLUMNS)
        # Checking the few distinct symbols beats a regex over every row.
        bad_symbols = [s for s in df["symbol"].unique().to_list() if s is None or not is_ticker(s)]
        ok_symbol = pl.col("symbol").is_not_null() & ~pl.col("symbol").is_in(bad_symbols)
        any_bad = pl.any_horizontal(bad_cols)
        self._report_rows(df.filter(~ok_symbol), bad_cols, per_symbol=False)
        self._report_rows(df.filter(ok_symbol & any_bad), bad_cols, per_symbol=True)

        return df.filter(ok_symbol & ~any_bad).select(
            "symbol", "d", *(pl.col(f"_{c}").alias(c) for c in VALUE_COLUMNS)
        )

    def _report_rows(self, rows: pl.DataFrame, bad_cols: list[str], *, per_symbol: bool) -> None:
        for r in rows.iter_rows(named=True):
            where = f"{r['_file']} line {r['_line']}"
            if not per_symbol:
                raw = str(r["symbol"] or "?")[:20]
                self._load_issues.append(
                    DataIssue(raw, None, "unparseable", f"{where}: symbol is not a ticker")
                )
                continue
            fields = [c for c, b in zip(BAR_COLUMNS, bad_cols, strict=True) if r[b]]
            what = ", ".join(f"{c}={r[c]!r} is not a {'date' if c == 'date' else 'number'}" for c in fields)
            issue = DataIssue(r["symbol"], r["d"], "unparseable", f"{where}: {what}")
            self._row_issues.setdefault(r["symbol"], []).append(issue)

    # ------------------------------------------------------------------ MarketDataProvider

    def symbols(self) -> list[str]:
        """Every symbol in the source (one whose data is unusable still raises BadSymbolError in bars())."""
        return list(self._symbols)

    def latest_date(self) -> date:
        if self._latest is None:
            raise DataSourceError(f"no usable bars in {self.path}")
        return self._latest

    def bars(self, symbol: str, as_of: date | None = None) -> BarSeries:
        """Bars up to ``as_of``, cleaned from the rows up to ``as_of`` only (see validation.py)."""
        return self._series(symbol.strip().upper(), as_of)

    def earnings_dates(self, symbol: str) -> list[date]:
        return [r.date for r in self._earnings.get(symbol.strip().upper(), ())]

    def earnings_reports(self, symbol: str) -> list[EarningsReport]:
        return list(self._earnings.get(symbol.strip().upper(), ()))

    def sector(self, symbol: str) -> str | None:
        return self._sectors.get(symbol.strip().upper())

    def issues(self, symbol: str | None = None) -> list[DataIssue]:
        """Issues of one symbol, or of the whole source (this cleans every symbol once)."""
        if symbol is None:
            out = list(self._load_issues)
            for sym in self._symbols:
                out.extend(self._symbol_issues(sym))
            return out
        key = symbol.strip().upper()
        loaded = [i for i in self._load_issues if i.symbol == key]
        if key not in self._symbols:
            if loaded:
                return loaded
            raise self._unknown(key)
        return loaded + self._symbol_issues(key)

    # ------------------------------------------------------------------ internals

    def _symbol_issues(self, key: str) -> list[DataIssue]:
        try:
            return list(self._series(key).issues)
        except BadSymbolError as e:
            return list(e.issues)

    def _raw(self, key: str) -> _RawBars | None:
        """The symbol's parsed rows as numpy columns, in file order (None when none parsed)."""
        raw: _RawBars | None = self._frames.get(key)
        return raw

    def _series(self, key: str, as_of: date | None = None) -> BarSeries:
        """Clean bars of ``key`` from the raw rows dated <= ``as_of`` only (causal cleaning)."""
        if key not in self._known:
            raise self._unknown(key)
        raw = self._raw(key)  # the parsed rows never change: no lock needed to read them
        cut: np.datetime64 | None = None
        if raw is not None and as_of is not None and raw.last is not None:
            # Key the cache by the last row on or before as_of: a weekend as-of and the Friday
            # give the same cleaning, and an as-of at or past the end is the whole history.
            day = np.datetime64(as_of, "D")
            if day < raw.last:
                on_or_before = raw.dates[raw.dates <= day]
                if on_or_before.size == 0:
                    return _empty(key)
                cut = on_or_before.max()
        cache_key: date | None = None if cut is None else _day(cut)
        # A series already cleaned is returned without the lock: the event loop asks for it again
        # in later stages and must not wait while a worker thread cleans another symbol.
        cached = self._cache.get(key, {}).get(cache_key)
        if cached is not None:
            return cached
        with self._lock:  # the orchestrator may ask for the same symbol from several threads
            per_symbol = self._cache.setdefault(key, {})
            cached = per_symbol.get(cache_key)
            if cached is not None:
                return cached
            bad = self._bad.get((key, cache_key))
            if bad is not None:
                raise BadSymbolError(bad.symbol, bad.issues, bad.n_rows)
            prior = self._row_issues.get(key, [])
            if cut is not None:
                cut_day = _day(cut)
                prior = [i for i in prior if i.date is None or i.date <= cut_day]
            try:
                if raw is None:  # every row of the symbol was unparseable
                    series = clean_series(key, [], [], [], [], [], [], prior_issues=prior)
                else:
                    dates, cols = raw.dates, raw.cols
                    if cut is not None:
                        # Rows without a date are not "after" anything: every as-of sees them.
                        keep = (dates <= cut) | np.isnat(dates)
                        dates, cols = dates[keep], tuple(c[keep] for c in cols)
                    series = clean_series(key, dates, *cols, prior_issues=prior)
            except BadSymbolError as e:
                self._bad[(key, cache_key)] = e
                raise
            if cache_key is not None and len(per_symbol) >= _AS_OF_CACHE:
                # Keep the whole history and the latest as-of dates: replays usually move forward.
                oldest = next(k for k in per_symbol if k is not None)
                del per_symbol[oldest]
            per_symbol[cache_key] = series
            return series

    def _unknown(self, key: str) -> UnknownSymbolError:
        close = difflib.get_close_matches(key, self._symbols, n=5, cutoff=0.5)
        if close:
            hint = f"did you mean {', '.join(close)}?"
        elif self._wanted is not None:
            hint = f"only {len(self._symbols)} symbol(s) were loaded from {self.path} (symbols= filter)"
        else:
            hint = f"not among the {len(self._symbols)} symbols of {self.path}"
        return UnknownSymbolError(key, hint)

    def __repr__(self) -> str:
        return f"CsvProvider({str(self.path)!r}, symbols={len(self._symbols)}, latest={self._latest})"


def _lost(col: str) -> pl.Expr:
    """The cell had text but its parsed column (``d`` for the date, ``_<col>`` otherwise) is null."""
    parsed = "d" if col == "date" else f"_{col}"
    return pl.col(col).is_not_null() & pl.col(parsed).is_null()


def _to_float(col: str) -> pl.Expr:
    return pl.col(col).str.strip_chars().cast(pl.Float64, strict=False)


@dataclass(frozen=True)
class _RawBars:
    dates: npt.NDArray[np.datetime64]  # file order; NaT where the date was missing
    cols: tuple[npt.NDArray[np.float64], ...]  # VALUE_COLUMNS
    last: np.datetime64 | None  # the latest known date


# A loaded source: the parsed rows per symbol and the latest date among them.
_Loaded = tuple[dict[str, _RawBars], date | None]


def _by_symbol(df: pl.DataFrame) -> dict[str, _RawBars]:
    """Per-symbol numpy views of one frame (sorted by symbol, file order kept within a symbol).

    One conversion to numpy and zero-copy slices beat ``partition_by`` (a frame copy per symbol). The
    symbols' row ranges come from the runs of equal symbols (``rle``: one pass, no hashing), which are
    each symbol's one group exactly when the run values strictly increase, i.e. the column is sorted
    (the sp500 file is); else the frame is sorted first. ~4x cheaper than ``is_sorted`` + ``group_by``.
    """
    symbols, lengths = _runs(df["symbol"])
    if any(a >= b for a, b in pairwise(symbols)):
        df = df.sort("symbol", maintain_order=True)
        symbols, lengths = _runs(df["symbol"])
    ends = np.cumsum(lengths)
    dates = df["d"].to_numpy()
    cols = [df[c].to_numpy() for c in VALUE_COLUMNS]
    out: dict[str, _RawBars] = {}
    start = 0
    for sym, end in zip(symbols, ends.tolist(), strict=True):
        d = dates[start:end]
        known = d[~np.isnat(d)]
        out[str(sym)] = _RawBars(d, tuple(c[start:end] for c in cols), known.max() if known.size else None)
        start = end
    return out


def _runs(symbols: pl.Series) -> tuple[list[str], npt.NDArray[np.int64]]:
    """Consecutive runs of equal values: (the values, the run lengths), in order."""
    runs = symbols.rle().struct
    return [str(s) for s in runs.field("value").to_list()], runs.field("len").to_numpy().astype(np.int64)


def _read_typed(path: Path) -> pl.DataFrame:
    """``path`` read with the typed schema (raises on a cell that does not parse)."""
    # Eager read_csv: on a .gz it is markedly faster than scan_csv(...).collect().
    return pl.read_csv(
        path,
        infer_schema=False,
        schema_overrides=_typed_overrides(path),
        truncate_ragged_lines=True,
        encoding="utf8-lossy",
    )


# --------------------------------------------------------------------------- prefetch

# The one file being loaded ahead: (path, size, mtime, has a symbol column) -> its typed load (the
# rows per symbol, None when the text path must decide) or the error it raised.
_PrefetchKey = tuple[str, int, int, bool]
_prefetched: dict[_PrefetchKey, Future[_Loaded | None]] = {}
_prefetch_lock = threading.Lock()


def _prefetch_key(path: Path, has_symbol: bool) -> _PrefetchKey | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, has_symbol)


def prefetch(
    path: Path | str,
    *,
    earnings_path: Path | str | None = None,
    sectors_path: Path | str | None = None,
    sides: bool = True,
) -> None:
    """Start the typed load of the data file ``path`` on a background thread.

    `jax run` calls this as soon as it knows its data file, so the load -- the read and the split per
    symbol, polars and numpy off the GIL -- overlaps the imports and database start-up that come before
    the provider is built. The provider then takes the result instead of loading the file itself (the
    same function, so the same rows; an error it raised is raised there; a file that needs the text
    path takes it there as usual). Only a single file is loaded ahead, for a provider of every symbol,
    and only once: a file changed since (size or mtime) is read again. The earnings and sectors files
    that provider reads (``earnings_path``/``sectors_path`` as it is given them) are loaded next, on
    the same thread; with ``sides=False`` they are not, and :func:`prefetch_sides` adds them later
    (`jax run` starts the data file before its settings, which name the side files, are loaded).
    """
    path = Path(path)
    if not path.is_file():
        return
    try:
        has_symbol = "symbol" in read_header(path)
    except Exception:  # unreadable: the provider reports it when it loads
        return
    key = _prefetch_key(path, has_symbol)
    if key is None:
        return
    future: Future[_Loaded | None] = Future()
    with _prefetch_lock:
        _prefetched.clear()  # at most one file held
        _prefetched[key] = future

    jobs = _side_jobs(path, earnings_path, sectors_path) if sides else []

    def load() -> None:
        try:
            future.set_result(_typed_load([(path, has_symbol)], None))
        except BaseException as exc:  # handed to the provider, which raises it where it loads
            future.set_exception(exc)
        for side, loader, side_future in jobs:
            _load_side(side, loader, side_future)

    threading.Thread(target=load, name="jax-csv-prefetch", daemon=True).start()


def prefetch_sides(
    path: Path | str, *, earnings_path: Path | str | None = None, sectors_path: Path | str | None = None
) -> None:
    """Load ahead, on a thread, the earnings and sectors files a provider of the data file ``path``
    reads (as :func:`prefetch` does with ``sides=True``), once the data file's own load ahead is done:
    the side files then do not compete with it for the cores."""
    path = Path(path)
    if not path.is_file():
        return
    jobs = _side_jobs(path, earnings_path, sectors_path)
    if not jobs:
        return
    with _prefetch_lock:
        data = list(_prefetched.values())

    def load() -> None:
        wait(data)
        for side, loader, side_future in jobs:
            _load_side(side, loader, side_future)

    threading.Thread(target=load, name="jax-csv-prefetch-sides", daemon=True).start()


def _side_jobs(
    path: Path, earnings_path: Path | str | None, sectors_path: Path | str | None
) -> list[_SideJob]:
    earnings, sectors = _side_paths(path, earnings_path, sectors_path)
    return _prefetch_sides([(earnings, load_earnings_reports), (sectors, load_sectors)])


def _side_paths(
    path: Path, earnings_path: Path | str | None, sectors_path: Path | str | None
) -> tuple[Path | None, Path | None]:
    """The earnings and sectors files a provider of ``path`` reads: the given ones (which must exist),
    else the ones beside the data when they are there (earnings details preferred), else None."""
    side_dir = path if path.is_dir() else path.parent
    details = side_dir / EARNINGS_DETAILS_FILE
    default_earnings = details if details.is_file() else side_dir / EARNINGS_FILE
    default_sectors = side_dir / SECTORS_FILE
    return (
        Path(earnings_path) if earnings_path is not None else _if_file(default_earnings),
        Path(sectors_path) if sectors_path is not None else _if_file(default_sectors),
    )


def _if_file(path: Path) -> Path | None:
    return path if path.is_file() else None


class _Loader(Protocol[_T]):
    def __call__(self, path: Path, *, issues: list[DataIssue] | None = None) -> dict[str, _T]: ...


# Side files loaded ahead after the data: (loader, path, size, mtime) -> (what it loaded, its issues).
_SideKey = tuple[str, str, int, int]
_SideFuture = Future[tuple[dict[str, Any], list[DataIssue]]]
_prefetched_side: dict[_SideKey, _SideFuture] = {}


def _side_key(path: Path, loader: _Loader[Any]) -> _SideKey | None:
    key = _prefetch_key(path, False)
    return None if key is None else (getattr(loader, "__name__", ""), key[0], key[1], key[2])


_SideJob = tuple[Path, _Loader[Any], _SideFuture]


def _prefetch_sides(sides: list[tuple[Path | None, _Loader[Any]]]) -> list[_SideJob]:
    """A pending load for each side file that exists: what the thread then loads, into these futures
    (a provider may take a future before the thread gets to it, and then waits for it)."""
    jobs: list[_SideJob] = []
    with _prefetch_lock:
        _prefetched_side.clear()  # only the side files of the data file read ahead
        for path, loader in sides:
            key = None if path is None else _side_key(path, loader)
            if path is not None and key is not None:
                future = _prefetched_side[key] = Future()
                jobs.append((path, loader, future))
    return jobs


def _load_side(path: Path, loader: _Loader[Any], future: _SideFuture) -> None:
    try:
        issues: list[DataIssue] = []
        future.set_result((loader(path, issues=issues), issues))
    except BaseException as exc:  # raised by the provider, where it loads the file
        future.set_exception(exc)


def _take_prefetched_side(
    path: Path, loader: _Loader[_T]
) -> Future[tuple[dict[str, _T], list[DataIssue]]] | None:
    key = _side_key(path, loader)
    with _prefetch_lock:
        return _prefetched_side.pop(key, None) if key is not None else None


def _take_prefetched(path: Path, has_symbol: bool) -> Future[_Loaded | None] | None:
    """The load :func:`prefetch` started for ``path`` (once), None when there is none for this file."""
    key = _prefetch_key(path, has_symbol)
    with _prefetch_lock:
        return _prefetched.pop(key, None) if key is not None else None


def _typed_load(files: list[tuple[Path, bool]], wanted: frozenset[str] | None) -> _Loaded | None:
    """The fast path: the parsed rows per symbol if every cell parsed typed and every symbol and date
    is plausible, else None (the text path then finds and reports the bad rows one by one)."""
    frames: list[pl.DataFrame] = []
    try:
        for f, has_symbol in files:
            df = _read_typed(f)
            df = df.rename({c: normalize_column(c) for c in df.columns if normalize_column(c) != c})
            sym = pl.col("symbol") if has_symbol else pl.lit(symbol_from_filename(f))
            frames.append(df.select(sym.alias("symbol"), pl.col("date").alias("d"), *VALUE_COLUMNS))
        df = pl.concat(frames, how="vertical")
    except (pl.exceptions.PolarsError, ValueError, KeyError):
        return None
    raw_symbols = df["symbol"].unique().to_list()
    if any(s is None or not is_ticker(s.strip().upper()) for s in raw_symbols):
        return None
    if any(s != s.strip().upper() for s in raw_symbols):  # only pay for cleaning when needed
        df = df.with_columns(clean_symbol().alias("symbol"))
    if wanted is not None:
        df = df.filter(pl.col("symbol").is_in(list(wanted)))
    dates = df["d"].drop_nulls()
    lo, hi = PLAUSIBLE_DATES
    if dates.len() and not (lo <= dates.min() <= hi and lo <= dates.max() <= hi):  # type: ignore[operator]
        return None
    return _grouped(df)


def _grouped(df: pl.DataFrame) -> _Loaded:
    latest = df["d"].max()
    return _by_symbol(df), latest if isinstance(latest, date) else None


def _typed_overrides(path: Path) -> dict[str, pl.DataType]:
    """Polars dtypes for the raw header names of ``path`` that normalise to a typed column."""
    return {raw: _TYPES[normalize_column(raw)] for raw in raw_header(path) if normalize_column(raw) in _TYPES}


def _day(x: np.datetime64) -> date:
    out: date = np.asarray(x, dtype="datetime64[D]").item()
    return out


def _empty(symbol: str) -> BarSeries:
    no_dates: npt.NDArray[np.datetime64] = np.array([], dtype="datetime64[D]")
    empty = np.array([], dtype=np.float64)
    return BarSeries(symbol, no_dates, empty, empty, empty, empty, empty)
