"""Pipeline validation at start-up: bad pipelines are rejected with a message naming the stage, both
from the library (build_pipeline / Orchestrator) and from `jax run` (exit code 2, message on stderr)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.engines.helpers import FnStage, policy
from typer.testing import CliRunner

from jax_assistant.cli import app
from jax_assistant.config import Settings
from jax_assistant.orchestrator import Orchestrator, RunRequest
from jax_assistant.pipeline.plugins import PipelineConfigError, build_pipeline, discover_stage_factories


def stage(name: str, after: list[str] | None = None) -> Callable[[], FnStage]:
    return lambda: FnStage(name, policy=policy(after=after or []))


FACTORIES = {
    "a": stage("a"),
    "b": stage("b", after=["a"]),
    "c": stage("c", after=["b"]),
    "needs_ghost": stage("needs_ghost", after=["ghost"]),
    "x": stage("x", after=["y"]),
    "y": stage("y", after=["x"]),
}


def test_a_valid_pipeline_builds_in_order() -> None:
    assert [s.name for s in build_pipeline(["a", "b", "c"], factories=FACTORIES)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a", "nope"], "unknown stage(s) 'nope'"),
        (["a", "needs_ghost"], "stage 'needs_ghost' needs 'ghost', which is not in the pipeline"),
        (["c", "a"], "stage 'c' needs 'b', which is not in the pipeline"),
        (["b", "a", "c"], "stage 'b' is listed before 'a', which it runs after"),
        (["a", "b", "a"], "stage(s) listed twice in the pipeline: a"),
        ([], "the pipeline is empty"),
    ],
    ids=["unknown", "missing-dependency", "missing-middle", "out-of-order", "duplicate", "empty"],
)
def test_bad_pipelines_are_rejected_naming_the_stage(names: list[str], message: str) -> None:
    with pytest.raises(PipelineConfigError) as caught:
        build_pipeline(names, factories=FACTORIES)
    assert message in str(caught.value)


def test_a_dependency_cycle_is_rejected_naming_its_stages() -> None:
    with pytest.raises(PipelineConfigError, match="cycle") as caught:
        build_pipeline(["x", "y"], factories=FACTORIES)
    assert "x" in str(caught.value) and "y" in str(caught.value)


def test_a_stage_registered_under_another_name_is_rejected() -> None:
    with pytest.raises(PipelineConfigError, match="registered as 'a' calls itself 'b'"):
        build_pipeline(["a"], factories={"a": stage("b")})


async def test_the_orchestrator_validates_before_it_runs_anything(
    register_stages: Callable[..., None], tmp_path: Path
) -> None:
    register_stages(**FACTORIES)
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'jax.db'}", pipeline=["b", "a"], metrics_enabled=False
    )
    async with Orchestrator(settings) as orch:
        with pytest.raises(PipelineConfigError, match="stage 'b' is listed before 'a'"):
            await orch.start_run(RunRequest())
        assert orch.repository is not None
        assert await orch.repository.list_runs() == []  # nothing was started


def broken_plugin(root: Path, error: str = "raise ImportError('needs libfoo, which is missing')") -> Path:
    root.mkdir()
    (root / "brokenplugin.py").write_text(error + "\n", encoding="utf-8")
    info = root / "brokenplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: brokenplugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[jax_assistant.stages]\nbroken = brokenplugin:BrokenStage\n", encoding="utf-8"
    )
    return root


def test_a_plugin_that_fails_to_import_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(broken_plugin(tmp_path / "plugin")))
    factories = discover_stage_factories()  # discovery alone does not import plugins
    assert "broken" in factories
    build_pipeline(["detect_events", "generate_trades"], factories=factories)  # unused: harmless
    with pytest.raises(PipelineConfigError) as caught:
        build_pipeline(["detect_events", "broken"], factories=factories)
    message = str(caught.value)
    assert "stage plugin 'broken' (brokenplugin:BrokenStage) failed to load" in message
    assert "needs libfoo" in message


def test_a_plugin_clashing_with_a_built_in_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "plugin"
    root.mkdir()
    (root / "impostor.py").write_text(
        "from jax_assistant.pipeline.stages import PersistStage\n\n\nclass Persist(PersistStage): ...\n",
        encoding="utf-8",
    )
    info = root / "impostor-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: impostor\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[jax_assistant.stages]\npersist = impostor:Persist\n", "utf-8")
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(PipelineConfigError, match="stage name 'persist' from impostor:Persist clashes with"):
        discover_stage_factories()


# ----------------------------------------------------------------------------- through `jax run`


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        (["detect_events", "nope"], "unknown stage(s) 'nope'"),
        (
            ["detect_events", "calculate_risk", "persist"],
            "stage 'calculate_risk' needs 'generate_trades', which is not in the pipeline",
        ),
        (
            ["generate_trades", "detect_events", "calculate_risk", "persist"],
            "stage 'generate_trades' is listed before 'detect_events', which it runs after",
        ),
        (["detect_events", "detect_events"], "stage(s) listed twice in the pipeline: detect_events"),
    ],
    ids=["unknown", "missing-dependency", "out-of-order", "duplicate"],
)
def test_jax_run_with_a_bad_pipeline_exits_2_naming_the_stage(pipeline: list[str], message: str) -> None:
    result = CliRunner().invoke(
        app, ["run", "--json"], env={"JAX_PIPELINE": json.dumps(pipeline), "COLUMNS": "400"}
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""  # no half-written JSON


def test_jax_run_with_a_broken_plugin_exits_2_naming_it(tmp_path: Path) -> None:
    plugin = broken_plugin(tmp_path / "plugin")
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(plugin), os.environ.get("PYTHONPATH", "")) if p),
        JAX_DATA_DIR=str(tmp_path / "data"),
        COLUMNS="400",
    )
    unused = subprocess.run(
        [sys.executable, "-m", "jax_assistant.cli", "run", "ACME.SIM", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unused.returncode == 0, unused.stderr  # installed but not in the pipeline: not imported
    env["JAX_PIPELINE"] = '["detect_events", "broken"]'
    proc = subprocess.run(
        [sys.executable, "-m", "jax_assistant.cli", "run", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "stage plugin 'broken' (brokenplugin:BrokenStage) failed to load" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
