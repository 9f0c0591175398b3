"""The event envelope and the payload of every event type.

An event is stored once by the gateway, which gives it a per-session ``seq``;
the same JSON travels to every client and is rendered by the UI. Runners send
only ``type`` and ``data`` (plus their own ``rseq``); the gateway wraps them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from .phases import ApprovalStatus, Decision, OnTimeout, TaskPhase

__all__ = [
    "EVENT_PAYLOADS",
    "FINAL_EVENT_PHASES",
    "PROTOCOL_VERSION",
    "AgentMessage",
    "AgentToolCall",
    "ApprovalCancelled",
    "ApprovalExpired",
    "ApprovalRequested",
    "ApprovalResolved",
    "Code",
    "CostUpdate",
    "ErrorData",
    "Event",
    "EventType",
    "FileCreated",
    "Output",
    "PlanProposed",
    "PlanStep",
    "StateSaved",
    "StepCompleted",
    "StepFailed",
    "StepProgress",
    "StepStarted",
    "TaskFinished",
    "TaskQueued",
    "TaskRetrying",
    "TaskStarted",
    "validate_payload",
]

PROTOCOL_VERSION: Final = 1
MAX_TEXT = 1_000_000  # one event's text; output is split into lines long before this


class EventType(StrEnum):
    """Dotted event names. Add new ones freely; never rename one.

    Each has its payload model in ``EVENT_PAYLOADS`` (a test holds them in
    step), and the UI's generated types map each name to its payload."""

    TASK_QUEUED = "task.queued"
    TASK_STARTED = "task.started"
    TASK_SUCCEEDED = "task.succeeded"
    TASK_FAILED = "task.failed"
    TASK_CANCELLED = "task.cancelled"
    TASK_TIMED_OUT = "task.timed_out"
    #: the runner died and the task will run again (not final; see ``retries``)
    TASK_RETRYING = "task.retrying"
    PLAN_PROPOSED = "plan.proposed"
    STEP_STARTED = "step.started"
    STEP_PROGRESS = "step.progress"
    STEP_COMPLETED = "step.completed"
    STEP_FAILED = "step.failed"
    AGENT_MESSAGE = "agent.message"
    AGENT_TOOL_CALL = "agent.tool_call"
    CODE = "code"
    OUTPUT = "output"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_RESOLVED = "approval.resolved"
    APPROVAL_EXPIRED = "approval.expired"
    APPROVAL_CANCELLED = "approval.cancelled"
    STATE_SAVED = "state.saved"
    COST_UPDATE = "cost.update"
    FILE_CREATED = "file.created"
    ERROR = "error"


#: The four final task events and the phase each one ends a task in.
FINAL_EVENT_PHASES: Final[dict[str, TaskPhase]] = {
    EventType.TASK_SUCCEEDED: TaskPhase.SUCCEEDED,
    EventType.TASK_FAILED: TaskPhase.FAILED,
    EventType.TASK_CANCELLED: TaskPhase.CANCELLED,
    EventType.TASK_TIMED_OUT: TaskPhase.TIMED_OUT,
}


class _Payload(BaseModel):
    # Payloads accept extra keys so that a newer runner can add fields
    # without an older gateway refusing its events.
    model_config = ConfigDict(extra="allow")


class TaskQueued(_Payload):
    engine: str
    mode: str
    prompt: str = ""
    behind: str | None = Field(
        default=None, description="The task this one waits for: its session runs one task at a time."
    )
    max_cost_usd: float | None = None
    max_tokens: int | None = None


class TaskStarted(_Payload):
    engine: str
    mode: str
    pid: int | None = None
    host: str | None = None
    resumed_from_version: int | None = None
    #: which run of the task this is: 1, then one more per ``task.retrying``
    attempt: int | None = Field(default=None, ge=1)


class TaskRetrying(_Payload):
    """The runner died; the task is queued again and starts ``attempt`` at ``retry_at``."""

    attempt: int = Field(ge=2)
    #: the most retries the task allows (its attempts are ``retries + 1``)
    retries: int = Field(ge=1)
    reason: str
    delay_s: float = Field(ge=0)
    retry_at: datetime
    exit_code: int | None = None
    signal: str | None = Field(default=None, max_length=16)


class TaskFinished(_Payload):
    """Payload of the four final task events."""

    reason: str = ""
    exit_code: int | None = None
    result: dict[str, Any] | None = None
    #: the signal that stopped the runner before any cancel reached it ("SIGTERM")
    signal: str | None = Field(default=None, max_length=16)


class PlanStep(BaseModel):
    title: str = Field(max_length=2000)
    agent: str | None = None
    description: str = Field(default="", max_length=20_000)


class PlanProposed(_Payload):
    steps: list[PlanStep] = Field(max_length=500)


class StepStarted(_Payload):
    step: int = Field(ge=1)
    total: int = Field(ge=1)
    title: str = ""
    agent: str | None = None


class StepProgress(_Payload):
    step: int = Field(ge=1)
    total: int = Field(ge=1)
    fraction: float = Field(ge=0.0, le=1.0)
    message: str = ""


class StepCompleted(_Payload):
    step: int = Field(ge=1)
    total: int = Field(ge=1)
    summary: str = ""


class StepFailed(_Payload):
    step: int = Field(ge=1)
    total: int = Field(ge=1)
    error: str = ""


class AgentMessage(_Payload):
    agent: str = Field(max_length=200)
    recipient: str | None = Field(default=None, max_length=200)
    content: str = Field(max_length=MAX_TEXT)


class AgentToolCall(_Payload):
    agent: str = Field(max_length=200)
    tool: str = Field(max_length=200)
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    call_id: str | None = None


class Code(_Payload):
    language: str = "python"
    source: str = Field(max_length=MAX_TEXT)
    agent: str | None = None
    filename: str | None = None


class Output(_Payload):
    stream: Literal["stdout", "stderr", "log"]
    text: str = Field(max_length=MAX_TEXT)
    level: str | None = None  # for stream == "log"


class ApprovalRequested(_Payload):
    approval_id: str
    kind: str = "approval"
    prompt: str = Field(max_length=100_000)
    options: list[Decision] = Field(default_factory=lambda: [Decision.APPROVE, Decision.REJECT])
    allow_text: bool = False
    context: dict[str, Any] = Field(default_factory=dict)
    expires_at: datetime | None = None
    on_timeout: OnTimeout = OnTimeout.REJECT


class ApprovalResolved(_Payload):
    approval_id: str
    status: ApprovalStatus
    decision: Decision
    text: str | None = None
    resolved_by: str


class ApprovalExpired(_Payload):
    approval_id: str
    on_timeout: OnTimeout


class ApprovalCancelled(_Payload):
    approval_id: str
    reason: str = ""


class StateSaved(_Payload):
    version: int
    checkpoint: str = ""


class CostUpdate(_Payload):
    agent: str | None = None
    model: str | None = None
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0.0)
    #: the task's running totals and limits, added by the runner's budget
    total_cost_usd: float | None = Field(default=None, ge=0.0)
    total_tokens: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = None
    max_tokens: int | None = None


class FileCreated(_Payload):
    path: str = Field(max_length=4096)
    size: int = Field(ge=0)
    mime: str | None = None


class ErrorData(_Payload):
    code: str
    message: str


#: Payload model of each known event type. Unknown types pass with any dict.
EVENT_PAYLOADS: Final[dict[str, type[BaseModel]]] = {
    EventType.TASK_QUEUED: TaskQueued,
    EventType.TASK_STARTED: TaskStarted,
    EventType.TASK_SUCCEEDED: TaskFinished,
    EventType.TASK_FAILED: TaskFinished,
    EventType.TASK_CANCELLED: TaskFinished,
    EventType.TASK_TIMED_OUT: TaskFinished,
    EventType.TASK_RETRYING: TaskRetrying,
    EventType.PLAN_PROPOSED: PlanProposed,
    EventType.STEP_STARTED: StepStarted,
    EventType.STEP_PROGRESS: StepProgress,
    EventType.STEP_COMPLETED: StepCompleted,
    EventType.STEP_FAILED: StepFailed,
    EventType.AGENT_MESSAGE: AgentMessage,
    EventType.AGENT_TOOL_CALL: AgentToolCall,
    EventType.CODE: Code,
    EventType.OUTPUT: Output,
    EventType.APPROVAL_REQUESTED: ApprovalRequested,
    EventType.APPROVAL_RESOLVED: ApprovalResolved,
    EventType.APPROVAL_EXPIRED: ApprovalExpired,
    EventType.APPROVAL_CANCELLED: ApprovalCancelled,
    EventType.STATE_SAVED: StateSaved,
    EventType.COST_UPDATE: CostUpdate,
    EventType.FILE_CREATED: FileCreated,
    EventType.ERROR: ErrorData,
}

EVENT_TYPE_PATTERN: Final = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"


def validate_payload(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Check ``data`` against its type's model; return it in normal form.

    Raises ``pydantic.ValidationError`` for a known type with a bad payload.
    """
    model = EVENT_PAYLOADS.get(event_type)
    if model is None:
        return data
    return model.model_validate(data).model_dump(mode="json", exclude_none=True)


class Event(BaseModel):
    """The envelope: the same on disk, on the client socket and in the UI."""

    v: int = PROTOCOL_VERSION
    seq: int = Field(ge=1)
    session_id: str
    task_id: str | None = None
    type: str = Field(pattern=EVENT_TYPE_PATTERN, max_length=64)
    ts: datetime
    data: dict[str, Any] = Field(default_factory=dict)
