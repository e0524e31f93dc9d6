"""Strategies: JSON-configured event strategies, code (indicator) strategies and their registry."""

from jax_assistant.strategies.code import (
    CODE_STRATEGIES,
    IndicatorStrategy,
    MacdCrossover,
    MaCrossover,
    RsiMomentum,
)
from jax_assistant.strategies.config import (
    StrategyConfig,
    StrategyConfigError,
    default_strategies_dir,
    load_strategy_config,
    load_strategy_configs,
    parse_target_rule,
)
from jax_assistant.strategies.registry import Strategy, StrategyRegistry, UnknownStrategyError
from jax_assistant.strategies.rules import ConfigStrategy, event_direction, session_window, setup_id

__all__ = [
    "CODE_STRATEGIES",
    "ConfigStrategy",
    "IndicatorStrategy",
    "MaCrossover",
    "MacdCrossover",
    "RsiMomentum",
    "Strategy",
    "StrategyConfig",
    "StrategyConfigError",
    "StrategyRegistry",
    "UnknownStrategyError",
    "default_strategies_dir",
    "event_direction",
    "load_strategy_config",
    "load_strategy_configs",
    "parse_target_rule",
    "session_window",
    "setup_id",
]
