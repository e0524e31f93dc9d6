"""The Stage contract: the one extension point of the pipeline.

A stage is a small object with a ``name``, a ``policy`` and one async ``run`` method. It receives the
symbol's ``WorkItem`` and a ``StageContext`` and returns a ``StageOutput`` holding the updated item.
Stage code stays plain: the engine applies timeouts, retries, breakers, limits, metrics, spans and
audit records around it. Inputs and outputs are pydantic models so the same stage can run
in-process or as a remote activity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from jax_assistant.domain import Event, TradeRecord, TradeSetup
from jax_assistant.pipeline.policy import StagePolicy

if TYPE_CHECKING:
    from jax_assistant.pipeline.services import Services


class TransientError(Exception):
    """An error worth retrying (a dependency hiccup). ``retry_after`` (seconds) is honoured if set."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StageSkipped(Exception):
    """Raised by a stage that has nothing to do for this item (recorded as ``skipped``)."""


class WorkItem(BaseModel):
    """The state of one symbol as it moves through the pipeline (checkpointed after every stage)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    symbol: str
    as_of: date
    lookback: int = Field(default=1, ge=1, description="sessions scanned for events, ending at as_of")
    correlation_id: str
    events: list[Event] = Field(default_factory=list)
    # Events pushed in (jax-ingest) for this symbol, none after as_of; detect_events merges them in.
    pushed_events: list[Event] = Field(default_factory=list)
    setups: list[TradeSetup] = Field(default_factory=list)
    trades: list[TradeRecord] = Field(default_factory=list, description="setups with their risk decision")
    data_issues: list[str] = Field(default_factory=list)
    extras: dict[str, Any] = Field(default_factory=dict, description="plugin outputs, keyed by stage name")
    completed_stages: list[str] = Field(default_factory=list)


class StageOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: WorkItem
    status: Literal["ok", "skipped", "degraded"] = "ok"
    reason: str | None = None


@dataclass
class StageContext:
    """What a stage may use besides its item: run identity, the replay date and shared services."""

    run_id: str
    correlation_id: str
    as_of: date
    services: Services
    params: dict[str, Any] = field(default_factory=dict)
    stage: str = ""
    attempt: int = 1


@runtime_checkable
class Stage(Protocol):
    name: str
    policy: StagePolicy

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput: ...


class RunStageOutput(BaseModel):
    """What a run-level stage returns: every item it was given (same symbols, any order), updated.

    ``failed`` maps a symbol to the reason this stage fails it (the engine then treats that symbol
    as if a per-symbol stage had failed: required stage -> symbol failed + dead letter, optional ->
    degraded). ``status``/``reason`` apply to every other symbol.
    """

    model_config = ConfigDict(extra="forbid")

    items: list[WorkItem]
    status: Literal["ok", "skipped", "degraded"] = "ok"
    reason: str | None = None
    failed: dict[str, str] = Field(default_factory=dict)


@runtime_checkable
class RunStage(Protocol):
    """A barrier: runs once per run, after every live symbol has finished the stages before it.

    It sees the items of every symbol that reached it (failed and cancelled symbols excluded), in the
    run's symbol order, and returns them updated. Per-symbol stages after it start only once it is
    done. This is how a decision that needs the whole watchlist (portfolio allocation) is made once,
    deterministically, instead of first come first served. On a distributed engine it maps onto a
    workflow step after the per-symbol children. ``scope`` tells the engine which kind a stage is.
    """

    name: str
    policy: StagePolicy
    scope: Literal["run"]

    async def run_all(self, ctx: StageContext, items: Sequence[WorkItem]) -> RunStageOutput: ...


def is_run_stage(stage: object) -> bool:
    """True for a run-level (barrier) stage, False for an ordinary per-symbol stage."""
    return getattr(stage, "scope", "symbol") == "run"


class BaseStage:
    """Convenience base: subclasses set ``name``/``default_policy`` and implement ``run``.

    ``leaves_input_intact``: set it True only for a stage that never changes the item it is handed in
    place (it returns changes through ``model_copy(update=...)``) nor anything it returns once it has
    returned it. The engine then reuses its JSON record of the fields handed back untouched instead of
    encoding them again (see ``engines/local.py``); a stage that is not sure leaves it False.
    """

    name: ClassVar[str] = ""
    default_policy: ClassVar[StagePolicy] = StagePolicy()
    leaves_input_intact: ClassVar[bool] = False

    def __init__(self, policy: StagePolicy | None = None) -> None:
        self.policy = policy or self.default_policy.model_copy(deep=True)

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:  # pragma: no cover - abstract
        raise NotImplementedError


class BaseRunStage:
    """Convenience base for run-level stages: set ``name``/``default_policy``, implement ``run_all``.
    ``leaves_input_intact`` as for :class:`BaseStage`, for every item it is handed."""

    name: ClassVar[str] = ""
    scope: ClassVar[Literal["run"]] = "run"
    default_policy: ClassVar[StagePolicy] = StagePolicy()
    leaves_input_intact: ClassVar[bool] = False

    def __init__(self, policy: StagePolicy | None = None) -> None:
        self.policy = policy or self.default_policy.model_copy(deep=True)

    async def run_all(
        self, ctx: StageContext, items: Sequence[WorkItem]
    ) -> RunStageOutput:  # pragma: no cover - abstract
        raise NotImplementedError
