"""Which questions research asks, chosen per strategy and event type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

EARNINGS = [
    "What were the results of the last four quarters against expectations?",
    "What are the key risks now?",
    "Which catalysts are coming up?",
]

DEFAULT_QUESTIONS: dict[str, list[str]] = {
    # by strategy id
    "earnings_gap_v1": EARNINGS,
    "volatility_spike_v1": [
        "What is driving the unusual volume or volatility?",
        "What are the key risks now?",
        "Which catalysts are coming up?",
    ],
    # by event type
    "earnings_surprise": EARNINGS,
    "gap_open": [
        "What caused the gap?",
        "What are the key risks now?",
        "Which catalysts are coming up?",
    ],
    "volume_spike": ["What is driving the unusual volume?", "What are the key risks now?"],
    "volatility_spike": ["What is driving the volatility?", "What are the key risks now?"],
}
FALLBACK = ["What are the recent developments?", "What are the key risks now?"]


def choose_questions(
    strategy_id: str, event_type: str | None, overrides: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """Configured questions win over the defaults; a strategy's over its event type's."""
    for table in (overrides or {}, DEFAULT_QUESTIONS):
        for key in (strategy_id, event_type):
            if key and key in table:
                return list(table[key])
    return list(FALLBACK)
