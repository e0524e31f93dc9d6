"""`jax run` executes its run inside ``one_run_gc`` (young and middle collections deferred), and the
process's thresholds are back afterwards."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from jax_assistant.cli import app
from jax_assistant.engines import tuning
from jax_assistant.engines.tuning import ONE_RUN_GEN0_THRESHOLD, ONE_RUN_GEN1_THRESHOLD, one_run_gc


def test_jax_run_executes_inside_one_run_gc(
    runner: CliRunner, jax_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int, int]] = []

    @contextmanager
    def recording() -> Iterator[None]:
        with one_run_gc():
            yield
            seen.append(gc.get_threshold())

    monkeypatch.setattr(tuning, "one_run_gc", recording)
    result = runner.invoke(app, ["run", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1 and seen[0][:2] == (ONE_RUN_GEN0_THRESHOLD, ONE_RUN_GEN1_THRESHOLD)
    assert gc.get_threshold()[:2] != (ONE_RUN_GEN0_THRESHOLD, ONE_RUN_GEN1_THRESHOLD)  # restored after
