"""Frames on the runner socket ``/ws/runner/{task_id}``.

A runner authenticates with its per-task token (``Authorization: Bearer`` or
``?token=``), sends ``hello``, and receives ``welcome`` with its task. Every
message that changes state carries the runner's own ``rseq`` (1, 2, 3 … per
task). The gateway stores each ``(task_id, rseq)`` at most once and answers
``ack`` with the highest ``rseq`` it holds without a gap; after a reconnect the
runner resends everything above ``welcome.acked_rseq``. Result: every event
exactly once, in order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .accounts import ModelPrice
from .events import EVENT_TYPE_PATTERN
from .phases import ApprovalStatus, Decision, OnTimeout

__all__ = [
    "MAX_RUNNER_FRAME_BYTES",
    "RunnerAck",
    "RunnerApprovalDecision",
    "RunnerApprovalRequest",
    "RunnerCancel",
    "RunnerError",
    "RunnerEvent",
    "RunnerHello",
    "RunnerInbound",
    "RunnerOutbound",
    "RunnerPing",
    "RunnerStateResult",
    "RunnerStateSave",
    "RunnerWelcome",
    "TaskSpec",
]

MAX_RUNNER_FRAME_BYTES = 4 * 1024 * 1024


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- runner → gateway -------------------------------------------------------


class RunnerHello(_Frame):
    type: Literal["hello"]
    pid: int | None = None
    host: str | None = None
    #: approvals the runner still waits for; the gateway answers those already decided
    pending_approvals: list[str] = Field(default_factory=list, max_length=1000)


class RunnerEvent(_Frame):
    type: Literal["event"]
    rseq: int = Field(ge=1)
    event_type: str = Field(pattern=EVENT_TYPE_PATTERN, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)
    ts: datetime | None = None


class RunnerApprovalRequest(_Frame):
    type: Literal["approval.request"]
    rseq: int = Field(ge=1)
    approval_id: str = Field(min_length=8, max_length=64)
    kind: str = Field(default="approval", max_length=64)
    prompt: str = Field(max_length=100_000)
    options: list[Decision] = Field(default_factory=lambda: [Decision.APPROVE, Decision.REJECT])
    allow_text: bool = False
    context: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)
    on_timeout: OnTimeout | None = None  # None: the task's policy


class RunnerStateSave(_Frame):
    type: Literal["state.save"]
    rseq: int = Field(ge=1)
    state: dict[str, Any]
    #: session state version the runner started from; None saves unconditionally
    expected_version: int | None = None
    checkpoint: str = Field(default="", max_length=200)


class RunnerPing(_Frame):
    type: Literal["ping"]


RunnerOutbound = Annotated[
    RunnerHello | RunnerEvent | RunnerApprovalRequest | RunnerStateSave | RunnerPing,
    Field(discriminator="type"),
]


# ---- gateway → runner -------------------------------------------------------


class TaskSpec(BaseModel):
    id: str
    session_id: str
    engine: str
    mode: str
    prompt: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = None
    approval_timeout_s: float | None = None
    on_timeout: OnTimeout = OnTimeout.REJECT
    max_cost_usd: float | None = None
    max_tokens: int | None = None
    #: the task owner's overrides of ``DEFAULT_PRICES``
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    #: which run of the task this is (1 for the first; see ``retries``): an engine
    #: may read it to resume from the session's stored state
    attempt: int = Field(default=1, ge=1)


class RunnerWelcome(BaseModel):
    type: Literal["welcome"] = "welcome"
    task: TaskSpec
    acked_rseq: int
    state: dict[str, Any] | None = None
    state_version: int = 0
    cancel_requested: bool = False


class RunnerAck(BaseModel):
    type: Literal["ack"] = "ack"
    rseq: int


class RunnerApprovalDecision(BaseModel):
    type: Literal["approval.decision"] = "approval.decision"
    approval_id: str
    status: ApprovalStatus
    decision: Decision | None = None
    text: str | None = None
    resolved_by: str | None = None


class RunnerStateResult(BaseModel):
    type: Literal["state.result"] = "state.result"
    rseq: int
    ok: bool
    version: int
    message: str = ""


class RunnerCancel(BaseModel):
    type: Literal["cancel"] = "cancel"
    reason: str = ""


class RunnerError(BaseModel):
    type: Literal["error"] = "error"
    code: str
    message: str


RunnerInbound = Annotated[
    RunnerWelcome | RunnerAck | RunnerApprovalDecision | RunnerStateResult | RunnerCancel | RunnerError,
    Field(discriminator="type"),
]
