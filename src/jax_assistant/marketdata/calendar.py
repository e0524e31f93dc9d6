"""Earnings calendars and sector maps from small CSV files, plus the CSV helpers the price reader shares.

Bad rows never abort a load: they are skipped, logged, and (if the caller passes an ``issues`` list)
reported as :class:`DataIssue` with rule ``"unparseable"`` or ``"duplicate_symbol"``.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import polars as pl

from jax_assistant.marketdata.base import DataIssue, DataSourceError, EarningsReport

__all__ = ["load_earnings_calendar", "load_earnings_reports", "load_sectors"]

log = logging.getLogger(__name__)

# Alternative header spellings seen in common exports (stooq "<TICKER>", Kaggle "Ticker", "Date").
COLUMN_ALIASES = {"ticker": "symbol", "sym": "symbol", "vol": "volume", "day": "date", "report_date": "date"}
# Valid tickers: letters, digits and the few separators exchanges use (BRK.B, BF-B, ^GSPC, ACME.SIM).
TICKER_RE = r"^[A-Z0-9][A-Z0-9.\-^=_/]{0,19}$"
PLAUSIBLE_DATES = (date(1900, 1, 1), date(2100, 12, 31))


def normalize_column(name: str) -> str:
    key = name.strip().strip("<>").strip().lower()
    return COLUMN_ALIASES.get(key, key)


def raw_header(path: Path) -> list[str]:
    """The column names of a (possibly gzipped) CSV as written, reading only its first line."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError as e:
        raise DataSourceError(f"cannot read {path}: {e}") from e
    return first.rstrip("\r\n").split(",") if first.strip() else []


def read_header(path: Path) -> list[str]:
    """The normalised column names of a (possibly gzipped) CSV, reading only its first line."""
    return [normalize_column(c) for c in raw_header(path)]


def scan_strings(path: Path, required: Iterable[str]) -> pl.LazyFrame:
    """A lazy scan of ``path`` with every column as text and normalised names.

    Everything is read as text so that one bad cell becomes one reported row later instead of a
    failed type inference for the whole file. Raises DataSourceError for a missing or empty file or
    missing columns (naming the path and the columns).
    """
    if not path.is_file():
        raise DataSourceError(f"data file not found: {path}")
    header = read_header(path)
    if not header:
        raise DataSourceError(f"{path} is empty (a header line is required)")
    missing = [c for c in required if c not in header]
    if missing:
        raise DataSourceError(
            f"{path} is missing required column(s) {', '.join(missing)}; found: {', '.join(header) or 'none'}"
        )
    lf = pl.scan_csv(path, infer_schema=False, truncate_ragged_lines=True, encoding="utf8-lossy")
    raw_names = lf.collect_schema().names()
    renames: dict[str, str] = {}
    for raw in raw_names:
        new = normalize_column(raw)
        # First spelling wins if two headers normalise to the same name (e.g. "Ticker" and "symbol").
        if new not in renames.values() and new not in raw_names:
            renames[raw] = new
    return lf.rename(renames) if renames else lf


def parse_date(col: str, *, us_formats: bool = False) -> pl.Expr:
    """ISO ``YYYY-MM-DD`` (a time part is ignored) or compact ``YYYYMMDD``; optionally US ``m/d/yy(yy)``.

    Unparseable or implausible values (outside 1900..2100) become null.
    """
    s = pl.col(col).str.strip_chars()
    candidates = [
        s.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False),
        s.str.to_date("%Y%m%d", strict=False),
    ]
    if us_formats:
        # Two- and four-digit years need different formats; %Y would read "6/6/14" as year 14.
        candidates += [
            pl.when(s.str.contains(r"^\d{1,2}/\d{1,2}/\d{4}$")).then(s.str.to_date("%m/%d/%Y", strict=False)),
            pl.when(s.str.contains(r"^\d{1,2}/\d{1,2}/\d{2}$")).then(s.str.to_date("%m/%d/%y", strict=False)),
        ]
    parsed = pl.coalesce(candidates)
    return pl.when(parsed.is_between(*PLAUSIBLE_DATES)).then(parsed)


def clean_symbol(col: str = "symbol") -> pl.Expr:
    return pl.col(col).str.strip_chars().str.to_uppercase()


def _report(path: Path, what: str, bad: list[DataIssue], issues: list[DataIssue] | None) -> None:
    if not bad:
        return
    log.warning("%s: skipped %d bad %s row(s), e.g. %s", path, len(bad), what, bad[0])
    if issues is not None:
        issues.extend(bad)


def _bad_row_issues(df: pl.DataFrame, path: Path, why: str) -> list[DataIssue]:
    return [
        DataIssue(
            symbol=str(row["symbol"] or "?"),
            date=None,
            rule="unparseable",
            detail=f"{path.name} line {row['_line']}: {why} ({row['_raw']})",
        )
        for row in df.iter_rows(named=True)
    ]


# Release-time spellings: earnings_details.csv says pre/post; common feeds say bmo/amc.
_RELEASE_TIMES = {"pre": "pre", "bmo": "pre", "before": "pre", "post": "post", "amc": "post", "after": "post"}


def load_earnings_reports(
    path: Path | str, *, issues: list[DataIssue] | None = None
) -> dict[str, list[EarningsReport]]:
    """``symbol,date[,release_time,eps_est,eps]`` rows -> reports per (upper-cased) symbol, by date.

    Dates: ISO, YYYYMMDD or m/d/yy. ``release_time`` ``pre``/``post`` (also ``bmo``/``amc``); anything
    else or a missing column is "unknown". A second row for the same (symbol, date) is ignored.
    """
    p = Path(path)
    lf = scan_strings(p, ("symbol", "date"))
    names = lf.collect_schema().names()

    def text(col: str) -> pl.Expr:
        return pl.col(col) if col in names else pl.lit(None, dtype=pl.String)

    df = (
        lf.with_row_index("_line", offset=2)  # line 1 is the header
        .select(
            "_line",
            clean_symbol().alias("symbol"),
            parse_date("date", us_formats=True).alias("d"),
            pl.col("date").alias("_raw"),
            text("release_time")
            .str.strip_chars()
            .str.to_lowercase()
            .replace_strict(_RELEASE_TIMES, default=None)
            .alias("release"),
            text("eps_est").str.strip_chars().cast(pl.Float64, strict=False).alias("eps_est"),
            text("eps").str.strip_chars().cast(pl.Float64, strict=False).alias("eps"),
        )
        .collect()
    )
    ok = pl.col("d").is_not_null() & pl.col("symbol").str.contains(TICKER_RE).fill_null(False)
    _report(p, "earnings", _bad_row_issues(df.filter(~ok), p, "bad symbol or date"), issues)
    good = df.filter(ok).unique(["symbol", "d"], keep="first", maintain_order=True).sort(["symbol", "d"])
    out: dict[str, list[EarningsReport]] = {}
    for sym, d, release, est, eps in good.select("symbol", "d", "release", "eps_est", "eps").iter_rows():
        out.setdefault(sym, []).append(
            EarningsReport(date=d, release_time=release, eps_estimate=_finite(est), eps=_finite(eps))
        )
    return out


def _finite(x: float | None) -> float | None:
    return x if x is not None and x == x and abs(x) != float("inf") else None


def load_earnings_calendar(
    path: Path | str, *, issues: list[DataIssue] | None = None
) -> dict[str, list[date]]:
    """``symbol,date`` rows -> sorted, de-duplicated report dates per (upper-cased) symbol.

    Extra columns are ignored (``earnings_details.csv`` works too). Dates: ISO, YYYYMMDD or m/d/yy.
    """
    reports = load_earnings_reports(path, issues=issues)
    return {sym: [r.date for r in rs] for sym, rs in reports.items()}


def load_sectors(path: Path | str, *, issues: list[DataIssue] | None = None) -> dict[str, str]:
    """``symbol,sector`` rows -> sector per (upper-cased) symbol; the first row of a symbol wins."""
    p = Path(path)
    df = (
        scan_strings(p, ("symbol", "sector"))
        .with_row_index("_line", offset=2)
        .select("_line", clean_symbol().alias("symbol"), pl.col("sector").str.strip_chars().alias("_raw"))
        .collect()
    )
    ok = pl.col("symbol").str.contains(TICKER_RE).fill_null(False) & (
        pl.col("_raw").str.len_chars() > 0
    ).fill_null(False)
    _report(p, "sector", _bad_row_issues(df.filter(~ok), p, "bad symbol or empty sector"), issues)
    out: dict[str, str] = {}
    dupes: list[DataIssue] = []
    for sym, sector in df.filter(ok).select("symbol", "_raw").iter_rows():
        if sym in out:
            if out[sym] != sector:
                dupes.append(
                    DataIssue(sym, None, "duplicate_symbol", f"sector {sector!r} ignored, kept {out[sym]!r}")
                )
            continue
        out[sym] = sector
    _report(p, "sector", dupes, issues)
    return out


def symbol_from_filename(path: Path) -> str:
    """``aapl.us.txt`` -> ``AAPL`` (the stem before the first dot, upper-cased)."""
    return path.name.split(".", 1)[0].strip().upper()


def is_ticker(s: str) -> bool:
    return re.match(TICKER_RE, s) is not None
