"""Risk: position sizing, portfolio constraints, protections and the shared portfolio book."""

from jax_assistant.risk.allocation import Allocation, Candidate, CorrelationLookup, allocate, score
from jax_assistant.risk.constraints import (
    PortfolioConstraints,
    PositionLimits,
    ProtectionSettings,
    RiskConfigError,
    RiskConstraints,
    load_risk_constraints,
)
from jax_assistant.risk.manager import RiskManager
from jax_assistant.risk.portfolio import (
    PortfolioBook,
    PortfolioState,
    Position,
    load_portfolio_state,
)
from jax_assistant.risk.protections import ViolationCode, check_protections, sessions_between
from jax_assistant.risk.sizing import PositionSizing, RiskInputError, calculate_position, stop_distance

__all__ = [
    "Allocation",
    "Candidate",
    "CorrelationLookup",
    "PortfolioBook",
    "PortfolioConstraints",
    "PortfolioState",
    "Position",
    "PositionLimits",
    "PositionSizing",
    "ProtectionSettings",
    "RiskConfigError",
    "RiskConstraints",
    "RiskInputError",
    "RiskManager",
    "ViolationCode",
    "allocate",
    "calculate_position",
    "check_protections",
    "load_portfolio_state",
    "load_risk_constraints",
    "score",
    "sessions_between",
    "stop_distance",
]
