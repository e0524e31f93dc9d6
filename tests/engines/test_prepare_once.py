"""prepare_run (every HTTP accept) validates what cannot change while the process runs only once: the
configured pipeline and the bundled strategies; what can change (a strategies folder) every time."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from jax_assistant import orchestrator as orchestrator_module
from jax_assistant.config import Settings
from jax_assistant.orchestrator import Orchestrator, RunRequest
from jax_assistant.strategies.config import default_strategies_dir
from jax_assistant.strategies.registry import StrategyRegistry


def count_calls(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> list[object]:
    calls: list[object] = []
    original = getattr(target, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, counted)
    return calls


def test_the_configured_pipeline_and_bundled_strategies_are_validated_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAX_DATA_DIR", str(tmp_path))
    orch = Orchestrator(Settings())
    builds = count_calls(monkeypatch, orchestrator_module, "build_pipeline")
    registries = count_calls(monkeypatch, StrategyRegistry, "default")
    first = orch.prepare_run(RunRequest(symbols=["ACME.SIM"]))
    second = orch.prepare_run(RunRequest(symbols=["ACME.SIM"]))
    assert first.stages is not None and second.stages is None  # built where the second executes
    assert second.run.pipeline == first.run.pipeline == [s.name for s in first.stages]
    assert (len(builds), len(registries)) == (1, 1)
    # A run with stage overrides is validated with its own stages, every time.
    timeouts = RunRequest(symbols=["ACME.SIM"], stage_overrides={"persist": {"timeout_s": 5}})
    assert orch.prepare_run(timeouts).stages is not None
    assert len(builds) == 2
    # A run's own services always get a fresh registry (its weights and suspensions are per run).
    services = orch.services(orch.provider(), second.run)
    assert (
        len(registries) == 2
        and services.strategies is not orch.services(orch.provider(), second.run).strategies
    )


def test_a_strategies_folder_is_read_on_every_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAX_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "strategies"
    shutil.copytree(default_strategies_dir(), folder)
    orch = Orchestrator(Settings(strategies_dir=folder))
    registries = count_calls(monkeypatch, StrategyRegistry, "default")
    orch.prepare_run(RunRequest(symbols=["ACME.SIM"]))
    orch.prepare_run(RunRequest(symbols=["ACME.SIM"]))
    assert len(registries) == 2  # an edited file is seen by the next request


def test_the_bundled_risk_constraints_are_parsed_once_a_configured_file_every_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAX_DATA_DIR", str(tmp_path / "data"))
    loads = count_calls(monkeypatch, orchestrator_module, "load_risk_constraints")
    orch = Orchestrator(Settings())
    for _ in range(3):
        orch.prepare_run(RunRequest(symbols=["ACME.SIM"]))
    assert len(loads) == 1
    # A run's own services get their own constraints.
    run = orch.prepare_run(RunRequest(symbols=["ACME.SIM"])).run
    assert orch.services(orch.provider(), run).risk is not orch.services(orch.provider(), run).risk
    assert len(loads) == 3
    # A configured file can be edited while the service runs: read on every request.
    bundled = orch.services(orch.provider(), run, validating=True).risk.constraints
    path = tmp_path / "risk.json"
    path.write_text(bundled.model_dump_json(by_alias=True))
    configured = Orchestrator(Settings(risk_constraints_path=path))
    loads.clear()
    configured.prepare_run(RunRequest(symbols=["ACME.SIM"]))
    configured.prepare_run(RunRequest(symbols=["ACME.SIM"]))
    assert len(loads) == 2
