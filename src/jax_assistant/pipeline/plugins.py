"""Stage discovery (built-ins + the ``jax_assistant.stages`` entry-point group) and pipeline validation.

The pipeline is an ordered list of stage names in config. At start-up every name must resolve to a
stage, every dependency a stage declares (``policy.after``) must be in the pipeline and come before
it, and dependencies must not form a cycle; anything else is rejected with a message naming the stage.
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

from pydantic import ValidationError

from jax_assistant.domain.errors import ConfigError
from jax_assistant.pipeline.base import RunStage, Stage, is_run_stage
from jax_assistant.pipeline.policy import StagePolicy

ENTRY_POINT_GROUP = "jax_assistant.stages"

StageFactory = Callable[..., Any]


class PipelineConfigError(ConfigError, ValueError):
    """The configured pipeline cannot run (unknown stage, missing dependency, cycle, bad plugin)."""


class _EntryPointFactory:
    """A plugin stage, imported only when a pipeline asks for it.

    Loading lazily means a broken plugin that no pipeline uses cannot stop every run; one that is
    used fails at start-up with its name and the import error.
    """

    def __init__(self, ep: EntryPoint) -> None:
        self.ep = ep

    def __call__(self) -> Any:
        try:
            factory = self.ep.load()
        except Exception as exc:
            raise PipelineConfigError(
                f"stage plugin {self.ep.name!r} ({self.ep.value}) failed to load: {exc}"
            ) from exc
        return factory()


def discover_stage_factories() -> dict[str, StageFactory]:
    """Stage factories by name: built-ins first, then every installed plugin.

    A plugin may not silently replace a built-in or another plugin: a clash is an error, because a
    pipeline whose meaning depends on install order cannot be trusted.
    """
    from jax_assistant.pipeline.stages import BUILTIN_STAGES

    factories: dict[str, StageFactory] = dict(BUILTIN_STAGES)
    origins = {name: f"{cls.__module__}:{cls.__qualname__}" for name, cls in BUILTIN_STAGES.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in origins:
            if origins[ep.name] == ep.value:
                continue  # our own built-ins are also declared as entry points
            raise PipelineConfigError(
                f"stage name {ep.name!r} from {ep.value} clashes with the stage from {origins[ep.name]}"
            )
        factories[ep.name] = _EntryPointFactory(ep)
        origins[ep.name] = ep.value
    return factories


def instantiate(name: str, factory: StageFactory, policy_override: dict[str, Any] | None) -> Stage:
    made = factory()
    if is_run_stage(made):
        if not isinstance(made, RunStage):
            raise PipelineConfigError(
                f"run stage {name!r} does not implement the RunStage protocol "
                "(needs name, policy, scope = 'run' and async run_all)"
            )
        # The pipeline stays typed as a list of Stage for its callers; the engine tells run stages
        # apart with is_run_stage() and calls their run_all instead of run.
        stage = cast(Stage, made)
    elif isinstance(made, Stage):
        stage = made
    else:
        raise PipelineConfigError(
            f"stage {name!r} does not implement the Stage protocol (needs name, policy and async run)"
        )
    if stage.name != name:
        raise PipelineConfigError(f"stage registered as {name!r} calls itself {stage.name!r}")
    if policy_override:
        try:
            stage.policy = stage.policy.merged(policy_override)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors()
            )
            raise PipelineConfigError(f"bad policy for stage {name!r}: {problems}") from exc
    return stage


def build_pipeline(
    names: Sequence[str],
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    factories: Mapping[str, StageFactory] | None = None,
) -> list[Stage]:
    """Resolve, instantiate and validate the ordered pipeline."""
    if not names:
        raise PipelineConfigError("the pipeline is empty: configure at least one stage")
    duplicates = sorted({n for n in names if list(names).count(n) > 1})
    if duplicates:
        raise PipelineConfigError(f"stage(s) listed twice in the pipeline: {', '.join(duplicates)}")
    available = dict(factories) if factories is not None else discover_stage_factories()
    unknown = [n for n in names if n not in available]
    if unknown:
        raise PipelineConfigError(
            f"unknown stage(s) {', '.join(map(repr, unknown))}; available: {', '.join(sorted(available))}"
        )
    overrides = overrides or {}
    stages = [instantiate(n, available[n], dict(overrides.get(n, {}))) for n in names]
    validate_order(stages)
    return stages


def validate_order(stages: Sequence[Stage]) -> None:
    position = {s.name: i for i, s in enumerate(stages)}
    graph = {s.name: set(s.policy.after) for s in stages}
    for stage in stages:
        missing = [d for d in stage.policy.after if d not in position]
        if missing:
            raise PipelineConfigError(
                f"stage {stage.name!r} needs {', '.join(map(repr, missing))}, which is not in the pipeline"
            )
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise PipelineConfigError(f"stage dependencies form a cycle: {cycle}") from exc
    for stage in stages:
        late = [d for d in stage.policy.after if position[d] > position[stage.name]]
        if late:
            raise PipelineConfigError(
                f"stage {stage.name!r} is listed before {', '.join(map(repr, late))}, which it runs after"
            )


def describe(stages: Sequence[Stage]) -> list[dict[str, Any]]:
    """A plain description of the pipeline (for `jax stages` and /status)."""
    out = []
    for s in stages:
        policy: StagePolicy = s.policy
        out.append(
            {
                "name": s.name,
                "scope": "run" if is_run_stage(s) else "symbol",
                **policy.model_dump(exclude={"retry"}),
                "attempts": policy.retry.attempts,
            }
        )
    return out
