from __future__ import annotations

from datetime import date

import pytest

from jax_assistant.risk import PortfolioState, Position, RiskConstraints, check_protections, sessions_between
from jax_assistant.risk.protections import Protection, build_protections, nth_session_after

C = RiskConstraints()
STOPPED = date(2024, 3, 5)  # a Tuesday


def codes(state: PortfolioState, as_of: date, symbol: str = "AAPL", c: RiskConstraints = C) -> list[str]:
    return [v.code for v in check_protections(state, symbol, as_of, c)]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (date(2024, 3, 4), date(2024, 3, 4), 0),
        (date(2024, 3, 4), date(2024, 3, 5), 1),
        (date(2024, 3, 8), date(2024, 3, 11), 1),  # Fri -> Mon skips the weekend
        (date(2024, 3, 4), date(2024, 3, 11), 5),
        (date(2024, 3, 9), date(2024, 3, 10), 0),  # Sat -> Sun
        (date(2024, 3, 11), date(2024, 3, 4), 0),
        (date(2024, 1, 1), date(2024, 12, 31), 252),  # NYSE: 261 weekdays in (Jan 1, Dec 31] less 9 holidays
        (date(2024, 3, 28), date(2024, 4, 1), 1),  # Good Friday is not a session
    ],
)
def test_sessions_between(start: date, end: date, expected: int) -> None:
    assert sessions_between(start, end) == expected


def test_nth_session_after() -> None:
    assert nth_session_after(STOPPED, 3) == date(2024, 3, 8)
    assert nth_session_after(date(2024, 3, 8), 1) == date(2024, 3, 11)


@pytest.mark.parametrize(
    ("as_of", "active"),
    [
        (date(2024, 3, 5), True),  # the stop-out day itself
        (date(2024, 3, 6), True),
        (date(2024, 3, 8), True),  # third session after the stop
        (date(2024, 3, 9), True),  # Saturday: still only three sessions
        (date(2024, 3, 11), False),  # fourth session
        (date(2024, 3, 4), False),  # stop-out in the future of as_of: unknown at that date
    ],
)
def test_cooldown_blocks_n_sessions_after_a_stop(as_of: date, active: bool) -> None:
    state = PortfolioState(last_stop_out={"aapl": STOPPED})
    assert ("COOLDOWN_ACTIVE" in codes(state, as_of)) is active
    assert codes(state, as_of, symbol="MSFT") == []


def test_cooldown_message_and_disable() -> None:
    state = PortfolioState(last_stop_out={"AAPL": STOPPED})
    [v] = check_protections(state, "aapl", date(2024, 3, 6), C)
    assert v.code == "COOLDOWN_ACTIVE"
    assert "2024-03-05" in v.message and "2024-03-08" in v.message
    assert (v.limit, v.actual) == (3, 1)
    off = C.merged({"protections": {"cooldown_sessions_after_stop": 0}})
    assert codes(state, STOPPED, c=off) == []


def test_drawdown_halt_at_the_limit() -> None:
    assert codes(PortfolioState(equity=8_000, peak_equity=10_000), STOPPED) == ["DRAWDOWN_HALT"]
    assert codes(PortfolioState(equity=8_001, peak_equity=10_000), STOPPED) == []
    assert codes(PortfolioState(equity=7_000, peak_equity=10_000), STOPPED, symbol="ANY") == ["DRAWDOWN_HALT"]


def test_daily_loss_at_the_limit() -> None:
    assert codes(PortfolioState(realised_pnl_today=-300), STOPPED) == ["DAILY_LOSS_EXCEEDED"]
    assert codes(PortfolioState(realised_pnl_today=-299.99), STOPPED) == []
    assert codes(PortfolioState(realised_pnl_today=500), STOPPED) == []


def test_too_many_open_positions() -> None:
    c = C.merged({"portfolio_constraints": {"max_positions": 2}})
    pos = Position(symbol="X", direction="long", entry=10, stop=9, size=1, opened_on=STOPPED)
    assert codes(PortfolioState(open_positions=[pos]), STOPPED, c=c) == []
    assert codes(PortfolioState(open_positions=[pos, pos]), STOPPED, c=c) == ["TOO_MANY_OPEN_POSITIONS"]


def test_order_halts_first() -> None:
    state = PortfolioState(
        equity=7_000, peak_equity=10_000, realised_pnl_today=-400, last_stop_out={"AAPL": STOPPED}
    )
    assert codes(state, STOPPED) == ["DRAWDOWN_HALT", "DAILY_LOSS_EXCEEDED", "COOLDOWN_ACTIVE"]


def test_protections_are_resolved_by_name_in_their_configured_order() -> None:
    assert [p.name for p in build_protections(C)] == ["drawdown_halt", "daily_loss", "cooldown"]
    c = C.merged({"protections": {"enabled": ["cooldown", "drawdown_halt"]}})
    protections = build_protections(c)
    assert all(isinstance(p, Protection) for p in protections)
    state = PortfolioState(
        equity=7_000, peak_equity=10_000, realised_pnl_today=-400, last_stop_out={"AAPL": STOPPED}
    )
    found = [v.code for p in protections if (v := p.check(state, "AAPL", STOPPED)) is not None]
    assert found == ["COOLDOWN_ACTIVE", "DRAWDOWN_HALT"]  # daily loss is not enabled


def test_unknown_protection_name_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown protection"):
        C.merged({"protections": {"enabled": ["stoploss_guard"]}})


def test_allocation_applies_only_the_enabled_protections() -> None:
    from tests.risk.conftest import make_setup

    from jax_assistant.risk import Candidate, RiskManager, allocate

    setup = make_setup("AAPL")
    cand = Candidate(setup=setup, risk=RiskManager().candidate(setup))
    state = PortfolioState(realised_pnl_today=-400)  # beyond the 3 % daily loss limit
    [blocked] = allocate([cand], state, C, as_of=STOPPED).decisions
    assert [v.code for v in blocked.constraints.violations] == ["DAILY_LOSS_EXCEEDED"]
    off = C.merged({"protections": {"enabled": ["drawdown_halt", "cooldown"]}})
    [free] = allocate([cand], state, off, as_of=STOPPED).decisions
    assert free.allowed
