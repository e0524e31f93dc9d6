"""jax-assistant: a resilient orchestrator that turns market events into risk-checked trade setups."""

__version__ = "0.1.0"
