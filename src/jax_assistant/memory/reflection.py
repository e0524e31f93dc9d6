"""The deterministic local reasoner: beliefs from a bank's memories, with no LLM.

``reflect_items(items, params, now)`` is a pure function (no I/O, no clock of its own), so the embedded
backend, the Hindsight fallback and the learning loop all derive the same beliefs from the same items.

Belief types
------------
``outcome_balance``
    Wins against losses among the outcome memories in the window. With ``n = wins + losses`` outcomes,
    ``confidence = 0.5 + 0.45 * |wins - losses| / n``: 0.5 when they balance (no lean), 0.95 when every
    outcome went one way. The golden case, 2 wins and 1 loss, gives ``0.5 + 0.45 / 3 = 0.65``. At least
    ``MIN_OUTCOMES`` outcomes are needed: one trade is an anecdote, not a belief.
``tag_pattern``
    A tag shared by at least ``MIN_TAG_SUPPORT`` memories in the window. ``support = count / total`` and
    ``confidence = 0.5 + 0.45 * support``; when those memories carry outcomes their wins and losses are
    reported too. At most ``MAX_TAG_BELIEFS``, most frequent first (ties by tag name).

An item's outcome is ``data.outcome`` (or ``data.result``) of ``win``/``loss``, else an ``outcome:win`` /
``outcome:loss`` tag, else the sign of ``data.pnl``, ``data.r_multiple`` or ``data.return_pct``;
zero or none of these means no outcome. ``params.query`` and ``prompt_hint`` are recorded in each belief
but do not steer this reasoner (they are for an LLM-backed reflect).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from jax_assistant.memory.beliefs import track_record_items
from jax_assistant.memory.models import BELIEF_TYPE, MemoryItem, ReflectionParams, make_belief

MIN_OUTCOMES: Final = 2
MIN_TAG_SUPPORT: Final = 3
MAX_TAG_BELIEFS: Final = 5
_WIN_WORDS = frozenset({"win", "won", "profit", "target"})
_LOSS_WORDS = frozenset({"loss", "lost", "stopped", "stop"})
# Tags that say what an item is rather than something about the market; patterns over them are noise.
_IGNORED_TAG_PREFIXES = ("belief", "outcome:")

Outcome = Literal["win", "loss"]


def outcome_of(item: MemoryItem) -> Outcome | None:
    data = item.data or {}
    for key in ("outcome", "result"):
        word = data.get(key)
        if isinstance(word, str):
            lowered = word.strip().lower()
            if lowered in _WIN_WORDS:
                return "win"
            if lowered in _LOSS_WORDS:
                return "loss"
    if "outcome:win" in item.tags:
        return "win"
    if "outcome:loss" in item.tags:
        return "loss"
    for key in ("pnl", "r_multiple", "return_pct"):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value == value and value != 0:
            return "win" if value > 0 else "loss"
    return None


def _belief_document_id(belief_type: str, key: str, window_to: datetime, evidence: Sequence[str]) -> str:
    # Stable across reruns over the same evidence, so storing a belief twice keeps one memory.
    digest = hashlib.sha256("\x1f".join(evidence).encode()).hexdigest()[:12]
    return f"belief:{belief_type}:{key}:{window_to.date().isoformat()}:{digest}"


def reflect_items(items: Sequence[MemoryItem], params: ReflectionParams, now: datetime) -> list[MemoryItem]:
    """Beliefs about ``items`` whose ``ts`` lies in ``[now - params.window_days, now]``."""
    start = now - timedelta(days=params.window_days)
    window = [
        item
        for item in items
        if item.ts is not None and start <= item.ts <= now and item.type != BELIEF_TYPE and item.id
    ]
    window.sort(key=lambda item: (item.ts, item.id or ""))
    context: dict[str, Any] = {"query": params.query, "prompt_hint": params.prompt_hint, "reasoner": "local"}
    beliefs: list[MemoryItem] = []

    outcomes = [(item, outcome_of(item)) for item in window]
    decided = [(item, result) for item, result in outcomes if result is not None]
    if len(decided) >= MIN_OUTCOMES:
        wins = sum(1 for _, result in decided if result == "win")
        losses = len(decided) - wins
        confidence = round(0.5 + 0.45 * abs(wins - losses) / len(decided), 4)
        lean = "positive" if wins > losses else "negative" if losses > wins else "balanced"
        evidence = [item.id for item, _ in decided if item.id]
        beliefs.append(
            make_belief(
                belief_type="outcome_balance",
                summary=(
                    f"{wins} win{'s' * (wins != 1)} vs {losses} loss{'es' * (losses != 1)}"
                    f" in the last {params.window_days} days: outcomes lean {lean}."
                ),
                window=(start, now),
                evidence_ids=evidence,
                confidence=confidence,
                ts=now,
                wins=wins,
                losses=losses,
                lean=lean,
                **context,
            ).model_copy(update={"document_id": _belief_document_id("outcome_balance", "all", now, evidence)})
        )

    counts: Counter[str] = Counter(
        tag for item in window for tag in set(item.tags) if not tag.startswith(_IGNORED_TAG_PREFIXES)
    )
    frequent = sorted(
        (tag for tag, count in counts.items() if count >= MIN_TAG_SUPPORT), key=lambda t: (-counts[t], t)
    )
    for tag in frequent[:MAX_TAG_BELIEFS]:
        tagged = [(item, result) for item, result in outcomes if tag in item.tags]
        evidence = [item.id for item, _ in tagged if item.id]
        support = len(tagged) / len(window)
        wins = sum(1 for _, result in tagged if result == "win")
        losses = sum(1 for _, result in tagged if result == "loss")
        record = f" ({wins} wins, {losses} losses)" if wins or losses else ""
        beliefs.append(
            make_belief(
                belief_type="tag_pattern",
                summary=f"Tag '{tag}' recurs in {len(tagged)} of {len(window)} memories{record}.",
                window=(start, now),
                evidence_ids=evidence,
                confidence=round(0.5 + 0.45 * support, 4),
                ts=now,
                tags=[tag],
                tag=tag,
                count=len(tagged),
                total=len(window),
                wins=wins,
                losses=losses,
                **context,
            ).model_copy(update={"document_id": _belief_document_id("tag_pattern", tag, now, evidence)})
        )
    # The learning loop's track records (per strategy, strategy x event type, symbol) from the same
    # window: what strategy weighting reads back (memory/beliefs.py, strategies/weighting.py).
    beliefs.extend(track_record_items(window, as_of=now.date(), window_days=params.window_days))
    return beliefs
