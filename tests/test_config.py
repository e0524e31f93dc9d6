"""Settings precedence: defaults < jax.toml < environment < explicit overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from jax_assistant.config import DEFAULT_PIPELINE, load_settings
from jax_assistant.domain.errors import ConfigError
from jax_assistant.pipeline.stages import PersistStage


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("JAX_") or key == "DATABASE_URL":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_embedded_defaults() -> None:
    s = load_settings()
    assert s.provider == "sample" and s.database_url is None
    assert s.pipeline == DEFAULT_PIPELINE
    assert s.account_size == 10_000 and s.risk_percent == 3
    assert s.detectors.gap_threshold_pct == 3.0
    assert "research.dexter" in s.resilience.rate_limits


def test_toml_then_env_then_explicit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "jax.toml").write_text(
        "account_size = 50000\nlookback = 5\n[engine]\nconcurrency = 4\n[stages.persist]\ntimeout_s = 9\n"
    )
    s = load_settings()
    assert (s.account_size, s.lookback, s.engine.concurrency) == (50_000, 5, 4)
    monkeypatch.setenv("JAX_LOOKBACK", "7")
    monkeypatch.setenv("JAX_ENGINE__CONCURRENCY", "2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    s = load_settings()
    assert (s.account_size, s.lookback, s.engine.concurrency) == (50_000, 7, 2)
    assert s.database_url == "postgresql://u@h/db"
    assert load_settings(lookback=3).lookback == 3
    # a stage override merges onto the stage's own default policy (its retry and `after` survive)
    policy = s.stage_policy("persist", PersistStage.default_policy)
    assert policy.timeout_s == 9 and policy.retry.attempts == 3 and policy.after == ["calculate_risk"]
    run_policy = s.stage_policy("persist", PersistStage.default_policy, {"retry": {"attempts": 1}})
    assert run_policy.timeout_s == 9 and run_policy.retry.attempts == 1


def test_jax_config_points_at_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text('provider = "csv"\n')
    monkeypatch.setenv("JAX_CONFIG", str(cfg))
    assert load_settings().provider == "csv"
    monkeypatch.setenv("JAX_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"JAX_CONFIG points at .*missing\.toml"):
        load_settings()


def test_unknown_and_invalid_keys_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "jax.toml").write_text("acount_size = 5\n")
    with pytest.raises(ConfigError, match=r"^jax\.toml: acount_size: unknown setting") as info:
        load_settings()
    assert (info.value.file, info.value.key) == ("jax.toml", "acount_size")
    (tmp_path / "jax.toml").write_text("account_size = -5\n")
    with pytest.raises(ConfigError, match=r"^jax\.toml: account_size: .*greater than 0 \(got -5\)"):
        load_settings()
    (tmp_path / "jax.toml").write_text("lookback = \n")
    with pytest.raises(ConfigError, match=r"^jax\.toml: not valid TOML"):
        load_settings()


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("field", ["account_size", "risk_percent"])
def test_numbers_must_be_finite(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=r"^--x: Input should be") as info:
        load_settings(labels={field: "--x"}, **{field: value})
    assert info.value.key == field


def test_an_error_names_the_variable_or_the_file_it_came_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "jax.toml").write_text("lookback = 2\n")
    monkeypatch.setenv("JAX_ENGINE__CONCURRENCY", "many")
    with pytest.raises(
        ConfigError, match=r"^engine\.concurrency \(environment variable JAX_ENGINE__CONCURRENCY\)"
    ):
        load_settings()
    monkeypatch.delenv("JAX_ENGINE__CONCURRENCY")
    monkeypatch.setenv("JAX_ENGINE", "{not json")
    with pytest.raises(ConfigError, match=r"^engine \(environment variable JAX_ENGINE\): cannot parse"):
        load_settings()
    monkeypatch.delenv("JAX_ENGINE")
    (tmp_path / "jax.toml").write_text("[engine]\nconcurrency = 0\n")
    with pytest.raises(ConfigError, match=r"^jax\.toml: engine\.concurrency: .*greater than or equal to 1"):
        load_settings()


def test_watchlist_from_the_environment_is_comma_separated_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAX_WATCHLIST", "AAPL, MSFT JPM")
    assert load_settings().watchlist == ["AAPL", "MSFT", "JPM"]
    monkeypatch.setenv("JAX_WATCHLIST", '["AAPL", "MSFT"]')
    assert load_settings().watchlist == ["AAPL", "MSFT"]
    monkeypatch.setenv("JAX_WATCHLIST", '["AAPL",')
    with pytest.raises(ConfigError, match=r"^watchlist \(environment variable JAX_WATCHLIST\): .*JSON"):
        load_settings()
