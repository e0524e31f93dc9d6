"""Trading memories and labelled queries built from the REAL events in ../shared/data (nothing committed).

Used by ``bench/memory_quality.py``, ``bench/memory.py`` and ``tests/memory/test_recall_quality.py``.

Events are found in the daily bars: earnings reactions (``earnings_details.csv``: the report day for a
pre-market release, the next session for a post-market one), opening gaps of at least ``GAP_PCT`` without
earnings, and volume spikes (at least ``SPIKE_X`` times the 20-session average) without earnings. Each event
becomes one memory whose summary states the real figures. Each labelled query asks, in words the memory
does not necessarily use ("rallied" for "opened higher", "heavy trading" for "volume"), for one kind of
event of one symbol; its relevant set is every memory of that kind, symbol and direction, known by
construction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GAP_PCT = 3.0
SPIKE_X = 3.0


@dataclass(frozen=True)
class LabelledQuery:
    q: str
    relevant: frozenset[str]  # document ids
    kind: str


def _sectors(data: Path) -> dict[str, str]:
    frame = pl.read_csv(data / "sectors.csv")
    return dict(zip(frame["symbol"].to_list(), frame["sector"].to_list(), strict=True))


def load_events(
    data: Path = DATA,
    *,
    file: str = "daily_ohlcv_stooq_longhist.csv.gz",
    since: str = "2012-01-01",
    move_pct: float | None = None,
) -> list[dict[str, Any]]:
    """Real events (dicts) from ``file`` on or after ``since``, oldest first.

    ``move_pct`` adds intraday moves (open to close) of at least that size as events of kind ``move``
    (the benchmark uses them to reach 100 000 real memories).
    """
    bars = (
        pl.read_csv(data / file, try_parse_dates=True)
        .sort("symbol", "date")
        .with_columns(
            prev_close=pl.col("close").shift(1).over("symbol"),
            avg_volume=pl.col("volume").shift(1).rolling_mean(20).over("symbol"),
        )
        .filter(pl.col("date") >= pl.lit(since).str.to_date())
        .drop_nulls(["prev_close", "avg_volume"])
        .with_columns(
            gap_pct=(pl.col("open") / pl.col("prev_close") - 1) * 100,
            day_pct=(pl.col("close") / pl.col("open") - 1) * 100,
            volume_x=pl.col("volume") / pl.col("avg_volume"),
        )
    )
    earnings = pl.read_csv(data / "earnings_details.csv", try_parse_dates=True)
    sectors = _sectors(data)
    events: list[dict[str, Any]] = []
    by_symbol = {key[0]: frame for key, frame in bars.group_by("symbol")}
    reaction_days: set[tuple[str, Any]] = set()
    for row in earnings.iter_rows(named=True):
        frame = by_symbol.get(row["symbol"])
        if frame is None or row["eps"] is None or row["eps_est"] is None:
            continue
        after = frame.filter(
            pl.col("date") >= row["date"] if row["release_time"] == "pre" else pl.col("date") > row["date"]
        ).head(1)
        if after.height == 0:
            continue
        bar = after.row(0, named=True)
        reaction_days.add((row["symbol"], bar["date"]))
        surprise = (
            "beat" if row["eps"] > row["eps_est"] else "miss" if row["eps"] < row["eps_est"] else "inline"
        )
        events.append(
            {
                "kind": "earnings",
                "symbol": row["symbol"],
                "date": bar["date"],
                "sector": sectors.get(row["symbol"], ""),
                "gap_pct": bar["gap_pct"],
                "day_pct": bar["day_pct"],
                "volume_x": bar["volume_x"],
                "eps": row["eps"],
                "eps_est": row["eps_est"],
                "surprise": surprise,
                "release": row["release_time"],
                "qtr": row["qtr"],
            }
        )
    wanted = (pl.col("gap_pct").abs() >= GAP_PCT) | (pl.col("volume_x") >= SPIKE_X)
    if move_pct is not None:
        wanted = wanted | (pl.col("day_pct").abs() >= move_pct)
    for bar in bars.filter(wanted).iter_rows(named=True):
        if (bar["symbol"], bar["date"]) in reaction_days:
            continue
        if abs(bar["gap_pct"]) >= GAP_PCT:
            kind = "gap"
        elif bar["volume_x"] >= SPIKE_X:
            kind = "volume"
        else:
            kind = "move"
        events.append(
            {
                "kind": kind,
                "symbol": bar["symbol"],
                "date": bar["date"],
                "sector": sectors.get(bar["symbol"], ""),
                "gap_pct": bar["gap_pct"],
                "day_pct": bar["day_pct"],
                "volume_x": bar["volume_x"],
            }
        )
    events.sort(key=lambda e: (e["date"], e["symbol"], e["kind"]))
    return events


def direction(event: dict[str, Any]) -> str:
    return "up" if event["gap_pct"] > 0 else "down"


def summary(event: dict[str, Any]) -> str:
    sym, sector = event["symbol"], event["sector"]
    when = event["date"].isoformat()
    if event["kind"] == "earnings":
        verdict = {"beat": "beat", "miss": "missed", "inline": "matched"}[event["surprise"]]
        return (
            f"{sym} ({sector}) {verdict} estimates on {when}: EPS {event['eps']} vs {event['eps_est']}"
            f" expected ({event['release']}-market report). It opened {abs(event['gap_pct']):.1f}%"
            f" {'higher' if event['gap_pct'] > 0 else 'lower'} and closed the session"
            f" {event['day_pct']:+.1f}%."
        )
    if event["kind"] == "gap":
        return (
            f"{sym} ({sector}) gapped {direction(event)} {abs(event['gap_pct']):.1f}% at the open on {when}"
            f" with no earnings report; it finished the session {event['day_pct']:+.1f}%."
        )
    if event["kind"] == "move":
        return (
            f"{sym} ({sector}) moved {event['day_pct']:+.1f}% from open to close on {when}"
            f" on {event['volume_x']:.1f}x its average volume."
        )
    return (
        f"{sym} ({sector}) traded {event['volume_x']:.1f}x its 20-day average volume on {when};"
        f" price moved {event['day_pct']:+.1f}% open to close."
    )


def document_id(event: dict[str, Any]) -> str:
    return f"{event['kind']}:{event['symbol']}:{event['date'].isoformat()}"


def memory_item(event: dict[str, Any]) -> dict[str, Any]:
    kind = event["kind"]
    tags = [f"sym:{event['symbol'].lower()}", f"event:{kind}", f"dir:{direction(event)}"]
    if kind == "earnings":
        tags.append(f"eps:{event['surprise']}")
    return {
        "ts": datetime(
            event["date"].year, event["date"].month, event["date"].day, 21, tzinfo=UTC
        ).isoformat(),
        "type": "market_event",
        "symbol": event["symbol"],
        "tags": tags,
        "summary": summary(event),
        "data": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in event.items()},
        "source": {"system": "jax-bench", "ref": "shared/data"},
        "document_id": document_id(event),
    }


# Query wording deliberately differs from the summaries' ("rallied" vs "opened higher"...).
_QUERY_TEMPLATES = {
    ("earnings", "beat", "up"): "{sym} rallied after beating analyst EPS forecasts",
    ("earnings", "miss", "down"): "{sym} sold off when quarterly profit fell short of forecasts",
    ("gap", "up"): "{sym} jumped at the open with no earnings news",
    ("gap", "down"): "{sym} dropped sharply at the open without an earnings catalyst",
    ("volume",): "unusually heavy trading activity in {sym} shares",
}


def labelled_queries(
    events: list[dict[str, Any]], *, per_kind: int = 1000, seed: int = 7
) -> list[LabelledQuery]:
    """One query per (symbol, template) that has at least one relevant event."""
    groups: dict[tuple[str, tuple[str, ...]], set[str]] = {}
    for event in events:
        if event["kind"] == "earnings":
            key: tuple[str, ...] = ("earnings", event["surprise"], direction(event))
        elif event["kind"] == "gap":
            key = ("gap", direction(event))
        else:
            key = ("volume",)
        if key in _QUERY_TEMPLATES:
            groups.setdefault((event["symbol"], key), set()).add(document_id(event))
    queries = [
        LabelledQuery(_QUERY_TEMPLATES[key].format(sym=sym), frozenset(ids), "/".join(key))
        for (sym, key), ids in sorted(groups.items())
    ]
    rng = random.Random(seed)
    rng.shuffle(queries)
    kept: dict[str, int] = {}
    out = []
    for query in queries:
        if kept.get(query.kind, 0) < per_kind:
            kept[query.kind] = kept.get(query.kind, 0) + 1
            out.append(query)
    return out


def recall_at(ranked: list[list[str]], queries: list[LabelledQuery], k: int = 5) -> dict[str, float]:
    """``any``: share of queries with a relevant memory in the top k; ``frac``: mean share of the
    min(k, |relevant|) slots filled by relevant memories."""
    hit_any = 0
    frac = 0.0
    for got, query in zip(ranked, queries, strict=True):
        top = got[:k]
        found = sum(1 for doc in top if doc in query.relevant)
        hit_any += found > 0
        frac += found / min(k, len(query.relevant))
    n = max(1, len(queries))
    return {"any": hit_any / n, "frac": frac / n, "queries": float(len(queries))}
