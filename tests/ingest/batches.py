"""The mixed good/bad batch both ingest front ends are tested with, and its exact expected outcomes."""

from __future__ import annotations

from typing import Any

# The sample market's last session (a triggered run's as-of date): the pushed events are that day's.
TS = "2025-06-27T14:30:00Z"
AFTER_AS_OF = "2025-06-30T14:30:00Z"


def mixed_batch() -> dict[str, Any]:
    gap = {"type": "gap_up", "timestamp": TS, "symbol": "acme.sim", "price": 101.5, "impact_estimate": -0.8}
    return {
        "generated_at": "2026-11-27T14:31:00Z",
        "observations": [
            gap,
            {
                "type": "headline",
                "timestamp": TS,
                "symbol": "BOLT.SIM",
                "confidence": 0.9,
                "headline": "Bolt wins a contract",
            },
            {
                "type": "volume",
                "timestamp": TS,
                "symbol": "BREW.SIM",
                "volume": 5e6,
                "impact_estimate": 0.2,
                "confidence": 0.3,
            },
            {
                "type": "earnings_event",
                "timestamp": "2025-06-27T08:00:00-05:00",
                "symbol": "BYTE.SIM",
                "bookmarked": True,
                "data": {"eps": 1.2},
            },
            {"type": "news", "symbol": "ACME.SIM", "headline": "no timestamp"},
            {"type": "news", "timestamp": TS, "confidence": 1.5},
            "not an object",
            {"type": "gap", "timestamp": TS, "impact_estimate": 0.9},
            dict(gap),  # the same observation again in the same batch
            {"type": "price_gap", "timestamp": TS, "symbol": "$$$", "price": -3},
        ],
    }


# (status, type, symbol, significant, bank, [(field, rule)]) per item, in order.
EXPECTED = [
    ("accepted", "price_gap", "ACME.SIM", True, "signals", []),
    ("accepted", "news_headline", "BOLT.SIM", True, "market_events", []),
    ("accepted", "unusual_volume", "BREW.SIM", False, None, []),
    ("accepted", "earnings", "BYTE.SIM", True, "market_events", []),
    ("rejected", None, None, False, None, [("timestamp", "missing")]),
    ("rejected", None, None, False, None, [("confidence", "less_than_equal")]),
    ("rejected", None, None, False, None, [("observation", "object")]),
    ("rejected", None, None, False, None, [("symbol", "value_error")]),
    ("duplicate", "price_gap", "ACME.SIM", True, None, []),
    ("rejected", None, None, False, None, [("symbol", "value_error"), ("price", "greater_than")]),
]
SIGNIFICANT_SYMBOLS = ["ACME.SIM", "BOLT.SIM", "BYTE.SIM"]
# The pushed events the triggered run carries, per symbol: (type, time, payload) — items 0, 1 and 3.
PUSHED = {
    "ACME.SIM": [
        ("price_gap", "2025-06-27T14:30:00Z", {"price": 101.5, "impactEstimate": -0.8}),
    ],
    "BOLT.SIM": [
        ("news_headline", "2025-06-27T14:30:00Z", {"confidence": 0.9, "headline": "Bolt wins a contract"}),
    ],
    "BYTE.SIM": [("earnings", "2025-06-27T13:00:00Z", {"bookmarked": True})],
}


def outcome_tuples(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            i["status"],
            i.get("type"),
            i.get("symbol"),
            i.get("significant"),
            i.get("bank"),
            [(e["field"], e["rule"]) for e in i.get("errors", [])],
        )
        for i in items
    ]
