"""Helpers for the risk tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from jax_assistant.domain import TradeSetup

AS_OF = date(2024, 3, 8)  # a Friday


def make_setup(
    symbol: str = "AAPL",
    entry: float = 100.0,
    stop: float = 95.0,
    targets: tuple[float, ...] = (110.0,),
    **extra: Any,
) -> TradeSetup:
    direction = "long" if stop < entry else "short"
    return TradeSetup(
        id=f"ts_test_{symbol}_{entry}_{stop}",
        symbol=symbol,
        direction=direction,
        entry=entry,
        stop=stop,
        targets=list(targets),
        strategy_id="test",
        **extra,
    )


@pytest.fixture
def setup_factory() -> Callable[..., TradeSetup]:
    return make_setup
