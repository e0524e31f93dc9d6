"""Shared test fixtures: where the real market data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

# Fixtures shared across folders live in plain modules loaded here (root conftest only may do this).
pytest_plugins = ["tests.bars"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real daily bars, earnings dates, sectors)."""
    if not (SHARED_DATA / "daily_ohlcv_stooq_sp500.csv.gz").exists():
        pytest.fail(f"real market data not found at {SHARED_DATA}; clone with ../shared beside it")
    return SHARED_DATA


@pytest.fixture
def api_auth_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Services started by the test (in process or as subprocesses, which inherit the environment)
    serve without API keys and for any Host: for suites about something else than auth, which
    tests/api/test_auth.py and tests/api/test_limits.py cover with the defaults on."""
    monkeypatch.setenv("JAX_API__AUTH", "off")
    monkeypatch.setenv("JAX_API__TRUSTED_HOSTS", '["*"]')
