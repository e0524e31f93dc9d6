"""Breaker state changes reach the Prometheus gauge the orchestrator exposes."""

from __future__ import annotations

from pathlib import Path

from jax_assistant.config import Settings
from jax_assistant.orchestrator import Orchestrator
from jax_assistant.pipeline.policy import BreakerConfig, ResilienceConfig
from jax_assistant.pipeline.resilience import FakeClock


def test_breaker_state_is_exported(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}",
        resilience=ResilienceConfig(
            breakers={
                "dep": BreakerConfig(
                    sliding_window_size=4, minimum_number_of_calls=4, wait_duration_in_open_s=5
                )
            }
        ),
    )
    orch = Orchestrator(settings, clock=clock)
    breaker = orch.resilience.breaker("dep")
    for _ in range(4):
        permit = breaker.acquire()
        breaker.on_error(0.01, RuntimeError("down"), permit)
    text = orch.metrics.render()[0].decode()
    assert 'jax_breaker_state{key="dep"} 2.0' in text  # open
    clock.advance(6)
    permit = breaker.acquire()  # the wait is over: half-open trial
    assert 'jax_breaker_state{key="dep"} 1.0' in orch.metrics.render()[0].decode()
    breaker.on_success(0.01, permit)
