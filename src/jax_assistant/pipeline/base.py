"""The Stage contract: the one extension point of the pipeline.

A stage is a small object with a ``name``, a ``policy`` and one async ``run`` method. It receives the
symbol's ``WorkItem`` and a ``StageContext`` and returns a ``StageOutput`` holding the updated item.
Stage code stays plain: the engine applies timeouts, retries, breakers, limits, metrics, spans and
audit records around it. Inputs and outputs are pydantic models so the same stage can run
in-process or as a remote activity.
"""

from __future__ import annotations

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


class BaseStage:
    """Convenience base: subclasses set ``name``/``default_policy`` and implement ``run``."""

    name: ClassVar[str] = ""
    default_policy: ClassVar[StagePolicy] = StagePolicy()

    def __init__(self, policy: StagePolicy | None = None) -> None:
        self.policy = policy or self.default_policy.model_copy(deep=True)

    async def run(self, ctx: StageContext, item: WorkItem) -> StageOutput:  # pragma: no cover - abstract
        raise NotImplementedError
