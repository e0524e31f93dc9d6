"""The example third-party stage in examples/plugins/ is built, installed and run in a real `jax run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.plugins.install import install_plugin

from jax_assistant.marketdata import SampleProvider

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "examples" / "plugins" / "jax-sentiment"
PIPELINE = '["detect_events","generate_trades","sentiment","calculate_risk","persist"]'

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the plugin (not the project it depends on) into a private site folder."""
    return install_plugin(PLUGIN, tmp_path_factory.mktemp("site"), "jax_sentiment_stage")


def jax(site: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "DATABASE_URL"}
    full_env = {**clean, "PYTHONPATH": str(site), "JAX_DATA_DIR": str(tmp_path / "data"), **env}
    return subprocess.run(
        [sys.executable, "-m", "jax_assistant", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=full_env,
        cwd=tmp_path,
    )


def independent_score(symbol: str, window: int = 10) -> float:
    bars = SampleProvider().bars(symbol)
    close, volume = bars.close[-(window + 1) :], bars.volume[-window:]
    up = np.sign(np.diff(close))
    return float((up * volume).sum() / volume.sum())


def test_plugin_is_discovered(plugin_site: Path, tmp_path: Path) -> None:
    proc = jax(plugin_site, tmp_path, "stages", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "sentiment" in json.loads(proc.stdout)["available"]
    without = subprocess.run(
        [sys.executable, "-m", "jax_assistant", "stages", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "sentiment" not in json.loads(without.stdout)["available"]


def test_plugin_runs_in_the_pipeline(plugin_site: Path, tmp_path: Path) -> None:
    proc = jax(
        plugin_site, tmp_path, "run", "FLUX.SIM", "ROAM.SIM", "ACME.SIM", "--json", JAX_PIPELINE=PIPELINE
    )
    assert proc.returncode == 0, proc.stderr
    payload: dict[str, Any] = json.loads(proc.stdout)
    assert payload["run"]["pipeline"] == json.loads(PIPELINE)
    for sym in payload["symbols"]:
        assert sym["status"] == "succeeded"
        assert [s["stage"] for s in sym["stages"]] == json.loads(PIPELINE)
        sentiment = sym["extras"]["sentiment"]
        assert sentiment["score"] == pytest.approx(independent_score(sym["symbol"]), abs=1e-4)
        assert sentiment["label"] in {"bullish", "neutral", "bearish"}
        assert set(sentiment["agrees"]) == {t["setup"]["id"] for t in sym["trades"]}
    # The plugin's output is stored with the run, not only printed.
    shown = jax(plugin_site, tmp_path, "runs", "show", payload["run"]["id"], "--json")
    stored = {s["symbol"]: s["extras"] for s in json.loads(shown.stdout)["symbols"]}
    assert stored["FLUX.SIM"]["sentiment"] == next(
        s["extras"]["sentiment"] for s in payload["symbols"] if s["symbol"] == "FLUX.SIM"
    )


def test_failing_optional_plugin_degrades_only_its_symbol(plugin_site: Path, tmp_path: Path) -> None:
    proc = jax(
        plugin_site,
        tmp_path,
        "run",
        "FLUX.SIM",
        "ROAM.SIM",
        "--json",
        JAX_PIPELINE=PIPELINE,
        JAX_SENTIMENT_FAIL="FLUX.SIM",
    )
    assert proc.returncode == 0, proc.stderr
    by_symbol = {s["symbol"]: s for s in json.loads(proc.stdout)["symbols"]}
    flux = by_symbol["FLUX.SIM"]
    assert flux["status"] == "degraded"
    stage = next(s for s in flux["stages"] if s["stage"] == "sentiment")
    assert stage["status"] == "failed" and "sentiment source unavailable" in stage["error"]
    assert "sentiment" not in flux["extras"]
    # Later stages still ran: the setups were sized.
    assert [s["stage"] for s in flux["stages"]][-2:] == ["calculate_risk", "persist"]
    assert flux["trades"] and all("positionSize" in t["risk"] for t in flux["trades"])
    assert by_symbol["ROAM.SIM"]["status"] == "succeeded"


def test_bad_pipeline_is_rejected_at_start_up(plugin_site: Path, tmp_path: Path) -> None:
    # `sentiment` runs after generate_trades: listing it first is an ordering error.
    bad = '["sentiment","detect_events","generate_trades","calculate_risk","persist"]'
    proc = jax(plugin_site, tmp_path, "run", "FLUX.SIM", JAX_PIPELINE=bad)
    assert proc.returncode == 2
    assert "'sentiment' is listed before 'generate_trades'" in proc.stderr
