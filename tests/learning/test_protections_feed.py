"""Protections read realised outcomes: equity, its peak, today's loss and stop-out cooldowns."""

from __future__ import annotations

from datetime import date

from jax_assistant.risk import load_risk_constraints
from jax_assistant.risk.portfolio import PortfolioState
from jax_assistant.risk.protections import RealisedTrade, check_protections, state_from_outcomes

D = date(2015, 8, 24)


def test_drawdown_daily_loss_and_cooldown_come_from_outcomes() -> None:
    constraints = load_risk_constraints()
    base = PortfolioState(account_size=10_000.0)
    assert check_protections(base, "AAPL", D, constraints) == []
    trades = [
        RealisedTrade("MSFT", date(2015, 8, 10), 2_000.0, stopped=False),  # peak 12 000
        RealisedTrade("AAPL", date(2015, 8, 20), -1_500.0, stopped=True),
        RealisedTrade("XOM", D, -900.0, stopped=True),  # today
        RealisedTrade("IBM", date(2015, 9, 1), -5_000.0, stopped=True),  # after D: unknown on D
    ]
    state = state_from_outcomes(base, trades, as_of=D)
    assert (state.equity, state.peak_equity, state.realised_pnl_today) == (9_600.0, 12_000.0, -900.0)
    assert state.last_stop_out == {"AAPL": date(2015, 8, 20), "XOM": D}
    codes = [v.code for v in check_protections(state, "AAPL", D, constraints)]
    # Bundled limits: max_drawdown 20 % (2 400 / 12 000 is 20 %), max_daily_loss 3 % (900 > 300),
    # a 3-session cooldown (AAPL stopped 2 sessions ago).
    assert codes == ["DRAWDOWN_HALT", "DAILY_LOSS_EXCEEDED", "COOLDOWN_ACTIVE"]
    assert "COOLDOWN_ACTIVE" not in [v.code for v in check_protections(state, "MSFT", D, constraints)]
    # Day by day equals all at once.
    step = state_from_outcomes(base, trades[:2], as_of=date(2015, 8, 21))
    step = state_from_outcomes(step.model_copy(update={"realised_pnl_today": 0.0}), trades[2:], as_of=D)
    assert step == state
