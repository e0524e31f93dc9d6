"""Prometheus metrics for the pipeline, behind a small interface the engine calls.

Names ``jax_orchestrator_runs_total``, ``jax_orchestrator_runs_completed_total`` and
``jax_orchestrator_runs_failed_total`` are the ones existing dashboards query; keep them exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    # prometheus_client (with its HTTP and WSGI servers) is imported by the PipelineMetrics that use
    # it: a process with NullMetrics (a CLI run: nothing scrapes it) never loads it.
    from prometheus_client import CollectorRegistry, Counter, Histogram

# Stage latencies span a cached in-process computation (~50 µs) to a slow research call (~60 s):
# roughly 1-2.5-5 steps per decade keep relative error bounded over those six decades.
STAGE_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
RATE_LIMIT_WAIT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# Dependency calls reach minutes: a Dexter research run is an LLM loop of up to 10 iterations.
DEPENDENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

BREAKER_STATE_VALUES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2, "forced_open": 2}

# set_in_flight() without a stage records the global figure (symbols in flight) under this label value.
IN_FLIGHT_ALL = "all"


def breaker_state_value(state: str) -> int:
    """0 closed, 1 half-open, 2 open. Accepts any case and ``half-open``/``half_open``/``HALF_OPEN``."""
    key = str(state).strip().lower().replace("-", "_")
    try:
        return BREAKER_STATE_VALUES[key]
    except KeyError:
        raise ValueError(f"unknown circuit-breaker state: {state!r}") from None


@runtime_checkable
class MetricsSink(Protocol):
    """What the engine needs from metrics; :class:`PipelineMetrics` and :class:`NullMetrics` provide it."""

    def run_started(self) -> None: ...
    def run_completed(self) -> None: ...
    def run_failed(self) -> None: ...
    def observe_stage(self, stage: str, status: str, seconds: float) -> None: ...
    def symbol_finished(self, status: str) -> None: ...
    def set_queue_depth(self, n: int) -> None: ...
    def set_in_flight(self, n: int, stage: str = IN_FLIGHT_ALL) -> None: ...
    def set_breaker_state(self, key: str, state: str) -> None: ...
    def observe_rate_limit_wait(self, key: str, seconds: float) -> None: ...
    def observe_dependency(self, dep: str, outcome: str, seconds: float) -> None: ...
    def render(self) -> tuple[bytes, str]: ...


class PipelineMetrics:
    """Prometheus collectors in their own registry.

    A private registry by default means several engines in one process (and tests run in sequence) never
    hit "Duplicated timeseries"; the API serves ``render()`` of the engine's instance. Pass
    ``prometheus_client.REGISTRY`` to share the process-wide default instead.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        # prometheus_client appends "_total" to counter names, so these are declared without it.
        self.runs = Counter("jax_orchestrator_runs", "Runs started.", registry=r)
        self.runs_completed = Counter("jax_orchestrator_runs_completed", "Runs completed.", registry=r)
        self.runs_failed = Counter("jax_orchestrator_runs_failed", "Runs failed.", registry=r)
        self.stage_duration = Histogram(
            "jax_stage_duration_seconds",
            "Stage duration (all attempts), by stage and final status.",
            ["stage", "status"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.stage_outcomes = Counter(
            "jax_stage_outcomes", "Stage results by stage and status.", ["stage", "status"], registry=r
        )
        self.symbols = Counter("jax_symbols", "Symbols finished, by terminal status.", ["status"], registry=r)
        self.queue_depth = Gauge("jax_queue_depth", "Work items waiting to start.", registry=r)
        self.in_flight = Gauge(
            "jax_in_flight",
            f"Work in progress, per stage; stage={IN_FLIGHT_ALL!r} is symbols in flight overall.",
            ["stage"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "jax_breaker_state", "Circuit-breaker state: 0 closed, 1 half-open, 2 open.", ["key"], registry=r
        )
        self.rate_limiter_wait = Histogram(
            "jax_rate_limiter_wait_seconds",
            "Time spent waiting for a rate-limiter permit.",
            ["key"],
            buckets=RATE_LIMIT_WAIT_BUCKETS,
            registry=r,
        )
        self.dependency_call = Histogram(
            "jax_dependency_call_seconds",
            "Calls to external dependencies (memory, research, ...) by outcome.",
            ["dependency", "outcome"],
            buckets=DEPENDENCY_BUCKETS,
            registry=r,
        )
        # observe_stage runs for every stage of every symbol. ``.labels()`` converts and validates the
        # values and takes the metric's lock on each call; caching the two children per (stage, status)
        # brought the call from ~3.2 to ~1.4 µs here. The label space (stages x statuses) is small, so the
        # cache stays tiny; a thread race only looks the same children up twice (labels() returns the
        # same child objects).
        self._stage_children: dict[tuple[str, str], tuple[Histogram, Counter]] = {}
        # /metrics is rendered again only when a value changed: every change goes through a method
        # below, which bumps the version. A registry passed in may hold collectors changed elsewhere
        # (the process-wide default does), so only a private one is cached.
        self._cacheable = registry is None
        self._version = 0
        self._rendered: tuple[int, bytes] | None = None

    @property
    def version(self) -> int:
        """Bumped by every change made through this object: /metrics and /status rebuild by it."""
        return self._version

    def run_started(self) -> None:
        self.runs.inc()
        self._version += 1  # after the change: render() reads the version before rendering

    def run_completed(self) -> None:
        self.runs_completed.inc()
        self._version += 1

    def run_failed(self) -> None:
        self.runs_failed.inc()
        self._version += 1

    def observe_stage(self, stage: str, status: str, seconds: float) -> None:
        key = (stage, status)
        children = self._stage_children.get(key)
        if children is None:
            children = (self.stage_duration.labels(stage, status), self.stage_outcomes.labels(stage, status))
            self._stage_children[key] = children
        children[0].observe(seconds)
        children[1].inc()
        self._version += 1

    def symbol_finished(self, status: str) -> None:
        self.symbols.labels(status).inc()
        self._version += 1

    def set_queue_depth(self, n: int) -> None:
        self.queue_depth.set(n)
        self._version += 1

    def set_in_flight(self, n: int, stage: str = IN_FLIGHT_ALL) -> None:
        self.in_flight.labels(stage).set(n)
        self._version += 1

    def set_breaker_state(self, key: str, state: str) -> None:
        self.breaker_state.labels(key).set(breaker_state_value(state))
        self._version += 1

    def observe_rate_limit_wait(self, key: str, seconds: float) -> None:
        self.rate_limiter_wait.labels(key).observe(seconds)
        self._version += 1

    def observe_dependency(self, dep: str, outcome: str, seconds: float) -> None:
        self.dependency_call.labels(dep, outcome).observe(seconds)
        self._version += 1

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its Content-Type, ready for a ``/metrics`` response."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if not self._cacheable:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        version = self._version  # read first: a change during rendering makes the next call render again
        if self._rendered is None or self._rendered[0] != version:
            self._rendered = (version, generate_latest(self.registry))
        return self._rendered[1], CONTENT_TYPE_LATEST


class NullMetrics:
    """Metrics switched off: same methods as :class:`PipelineMetrics`, each doing nothing."""

    def run_started(self) -> None:
        pass

    def run_completed(self) -> None:
        pass

    def run_failed(self) -> None:
        pass

    def observe_stage(self, stage: str, status: str, seconds: float) -> None:
        pass

    def symbol_finished(self, status: str) -> None:
        pass

    def set_queue_depth(self, n: int) -> None:
        pass

    def set_in_flight(self, n: int, stage: str = IN_FLIGHT_ALL) -> None:
        pass

    def set_breaker_state(self, key: str, state: str) -> None:
        # Validate anyway, so a wrong state name is caught with metrics off too.
        breaker_state_value(state)

    def observe_rate_limit_wait(self, key: str, seconds: float) -> None:
        pass

    def observe_dependency(self, dep: str, outcome: str, seconds: float) -> None:
        pass

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST

        return b"", CONTENT_TYPE_LATEST
