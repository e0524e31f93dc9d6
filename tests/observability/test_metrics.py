from __future__ import annotations

import inspect
import re

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from jax_assistant.domain import StageStatus
from jax_assistant.observability import MetricsSink, NullMetrics, PipelineMetrics
from jax_assistant.observability.metrics import STAGE_BUCKETS


def _text(m: PipelineMetrics) -> str:
    body, content_type = m.render()
    assert isinstance(body, bytes)
    assert content_type.startswith("text/plain")
    return body.decode()


def test_dashboard_run_counters_have_exact_names() -> None:
    m = PipelineMetrics()
    m.run_started()
    m.run_started()
    m.run_completed()
    m.run_failed()
    text = _text(m)
    for name, value in [
        ("jax_orchestrator_runs_total", 2.0),
        ("jax_orchestrator_runs_completed_total", 1.0),
        ("jax_orchestrator_runs_failed_total", 1.0),
    ]:
        assert f"# TYPE {name} counter" in text
        assert re.search(rf"^{name} {value}$", text, re.M), name
    assert "_total_total" not in text


def test_stage_series_and_histogram_counts() -> None:
    m = PipelineMetrics()
    m.observe_stage("detect_events", "ok", 0.00004)
    m.observe_stage("detect_events", StageStatus.OK, 0.002)  # enum and str are the same series
    m.observe_stage("detect_events", "ok", 45.0)
    m.observe_stage("research", "timed_out", 30.0)
    text = _text(m)
    assert 'jax_stage_outcomes_total{stage="detect_events",status="ok"} 3.0' in text
    assert 'jax_stage_outcomes_total{stage="research",status="timed_out"} 1.0' in text
    assert 'jax_stage_duration_seconds_count{stage="detect_events",status="ok"} 3.0' in text
    get = m.registry.get_sample_value
    labels = {"stage": "detect_events", "status": "ok"}
    assert get("jax_stage_duration_seconds_bucket", {**labels, "le": "5e-05"}) == 1.0
    assert get("jax_stage_duration_seconds_bucket", {**labels, "le": "0.0025"}) == 2.0
    assert get("jax_stage_duration_seconds_bucket", {**labels, "le": "60.0"}) == 3.0
    assert get("jax_stage_duration_seconds_sum", labels) == pytest.approx(45.00204)


def test_stage_buckets_cover_50us_to_60s() -> None:
    assert STAGE_BUCKETS[0] == 0.00005
    assert STAGE_BUCKETS[-1] == 60.0
    assert list(STAGE_BUCKETS) == sorted(STAGE_BUCKETS)


def test_symbols_queue_in_flight_breaker() -> None:
    m = PipelineMetrics()
    m.symbol_finished("succeeded")
    m.symbol_finished("succeeded")
    m.symbol_finished("failed")
    m.set_queue_depth(7)
    m.set_in_flight(3)
    m.set_in_flight(2, stage="research")
    m.set_breaker_state("memory", "closed")
    m.set_breaker_state("dexter", "HALF_OPEN")
    m.set_breaker_state("hindsight", "half-open")
    m.set_breaker_state("polygon", "open")
    text = _text(m)
    assert 'jax_symbols_total{status="succeeded"} 2.0' in text
    assert 'jax_symbols_total{status="failed"} 1.0' in text
    assert re.search(r"^jax_queue_depth 7.0$", text, re.M)
    assert 'jax_in_flight{stage="all"} 3.0' in text
    assert 'jax_in_flight{stage="research"} 2.0' in text
    assert 'jax_breaker_state{key="memory"} 0.0' in text
    assert 'jax_breaker_state{key="dexter"} 1.0' in text
    assert 'jax_breaker_state{key="hindsight"} 1.0' in text
    assert 'jax_breaker_state{key="polygon"} 2.0' in text
    m.set_queue_depth(0)
    assert m.registry.get_sample_value("jax_queue_depth") == 0.0


def test_unknown_breaker_state_is_rejected_by_both_sinks() -> None:
    with pytest.raises(ValueError):
        PipelineMetrics().set_breaker_state("memory", "ajar")
    with pytest.raises(ValueError):
        NullMetrics().set_breaker_state("memory", "ajar")


def test_rate_limit_and_dependency_histograms() -> None:
    m = PipelineMetrics()
    m.observe_rate_limit_wait("polygon", 0.2)
    m.observe_rate_limit_wait("polygon", 2.0)
    m.observe_dependency("memory", "ok", 0.01)
    m.observe_dependency("research", "error", 90.0)
    get = m.registry.get_sample_value
    assert get("jax_rate_limiter_wait_seconds_count", {"key": "polygon"}) == 2.0
    assert get("jax_rate_limiter_wait_seconds_sum", {"key": "polygon"}) == pytest.approx(2.2)
    assert get("jax_dependency_call_seconds_count", {"dependency": "memory", "outcome": "ok"}) == 1.0
    research_error = {"dependency": "research", "outcome": "error"}
    assert get("jax_dependency_call_seconds_bucket", {**research_error, "le": "60.0"}) == 0.0
    assert get("jax_dependency_call_seconds_bucket", {**research_error, "le": "120.0"}) == 1.0


def test_exposition_parses_and_lists_every_family() -> None:
    m = PipelineMetrics()
    names = {f.name for f in text_string_to_metric_families(_text(m))}
    expected = {
        "jax_orchestrator_runs",
        "jax_orchestrator_runs_completed",
        "jax_orchestrator_runs_failed",
        "jax_stage_duration_seconds",
        "jax_stage_outcomes",
        "jax_symbols",
        "jax_queue_depth",
        "jax_in_flight",
        "jax_breaker_state",
        "jax_rate_limiter_wait_seconds",
        "jax_dependency_call_seconds",
    }
    assert expected <= names


def test_separate_registries_do_not_collide() -> None:
    a, b = PipelineMetrics(), PipelineMetrics()  # would raise "Duplicated timeseries" on a shared registry
    a.run_started()
    a.observe_stage("persist", "ok", 0.1)
    assert a.registry is not b.registry
    assert a.registry.get_sample_value("jax_orchestrator_runs_total") == 1.0
    assert b.registry.get_sample_value("jax_orchestrator_runs_total") == 0.0
    assert (
        b.registry.get_sample_value("jax_stage_outcomes_total", {"stage": "persist", "status": "ok"}) is None
    )


def test_explicit_registry_is_used() -> None:
    registry = CollectorRegistry()
    m = PipelineMetrics(registry)
    m.run_failed()
    assert m.registry is registry
    assert registry.get_sample_value("jax_orchestrator_runs_failed_total") == 1.0


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_null_metrics_mirrors_pipeline_metrics() -> None:
    real, null = _public_methods(PipelineMetrics), _public_methods(NullMetrics)
    assert real.keys() == null.keys()
    assert real == null  # same parameters, defaults and annotations
    protocol = {n for n in dir(MetricsSink) if not n.startswith("_")}
    assert protocol == set(real)
    assert isinstance(PipelineMetrics(), MetricsSink)
    assert isinstance(NullMetrics(), MetricsSink)


def test_null_metrics_do_nothing() -> None:
    n = NullMetrics()
    n.run_started()
    n.observe_stage("x", "ok", 1.0)
    n.set_in_flight(1)
    n.observe_dependency("memory", "ok", 0.1)
    assert n.render()[0] == b""


def test_render_is_reused_until_a_value_changes() -> None:
    from jax_assistant.observability.metrics import PipelineMetrics as Fresh

    m = Fresh()
    first, _ = m.render()
    assert m.render()[0] is first  # nothing changed: the same bytes, not rendered again
    m.run_started()
    second, _ = m.render()
    assert second is not first
    assert b"jax_orchestrator_runs_total 1.0" in second
    m.observe_dependency("memory", "ok", 0.01)
    assert b'jax_dependency_call_seconds_count{dependency="memory",outcome="ok"} 1.0' in m.render()[0]
