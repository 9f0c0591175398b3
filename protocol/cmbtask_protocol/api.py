"""REST request and response bodies (``/api/...``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from .accounts import MaxCostUsd, MaxTokens
from .jsontypes import JSON_NUMBER, NO_NUL, JsonBool, JsonFloat, StorableText
from .phases import ApprovalStatus, Decision, OnTimeout, SessionStatus, TaskPhase
from .retries import DEFAULT_RETRY_BACKOFF_S, Retries, RetryBackoffS

__all__ = [
    "MAX_DB_INT",
    "MAX_PARAMS_BYTES",
    "MAX_PROMPT_CHARS",
    "MAX_TITLE_CHARS",
    "ApprovalList",
    "ApprovalResolve",
    "ApprovalView",
    "ErrorBody",
    "EventPage",
    "ModeInfo",
    "SessionCreate",
    "SessionList",
    "SessionUpdate",
    "SessionView",
    "TaskCreate",
    "TaskView",
]

MAX_PROMPT_CHARS = 100_000
MAX_PARAMS_BYTES = 256 * 1024
MAX_TITLE_CHARS = 200
#: the largest integer every database column takes (PostgreSQL ``integer``):
#: numbers compared with stored ones are bounded by it, so no query overflows
MAX_DB_INT = 2**31 - 1


class _Strict(StorableText):
    """A request body: unknown fields are refused, numbers must be JSON
    numbers (``"5"`` is not 5), as the JSON Schema says, and text is storable."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a stable ``code`` and a sentence for people."""

    code: str
    message: str
    detail: Any | None = None


class SessionCreate(_Strict):
    title: str = Field(default="Untitled session", min_length=1, max_length=MAX_TITLE_CHARS, pattern=NO_NUL)
    mode: str = Field(default="planning-control", min_length=1, max_length=64, pattern=NO_NUL)
    ttl_s: Annotated[int, Field(ge=60, le=365 * 24 * 3600), JSON_NUMBER] | None = None
    parallel_tasks: JsonBool = Field(
        default=False,
        description="Run this session's tasks side by side. By default a session runs one task at a "
        "time, in submission order, since its tasks load and save the same stored state.",
    )


class SessionUpdate(_Strict):
    """PATCH body. ``version`` must equal the stored one (optimistic locking)."""

    version: Annotated[int, Field(ge=1, le=MAX_DB_INT), JSON_NUMBER]
    title: str | None = Field(default=None, min_length=1, max_length=MAX_TITLE_CHARS, pattern=NO_NUL)
    mode: str | None = Field(default=None, min_length=1, max_length=64, pattern=NO_NUL)
    context: dict[str, Any] | None = None


class SessionView(BaseModel):
    id: str
    owner: str
    title: str
    mode: str
    status: SessionStatus
    version: int
    last_seq: int
    #: the phase of the task the session is on (the last one to change phase)
    phase: TaskPhase | None = None
    step: int | None = None
    plan: list[dict[str, Any]] | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)
    has_state: bool = False
    state_version: int = 0
    parallel_tasks: bool = False
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None


class SessionList(BaseModel):
    items: list[SessionView]
    total: int
    limit: int
    offset: int


class TaskCreate(_Strict):
    engine: str = Field(default="demo", min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
    mode: str = Field(default="one-shot", min_length=1, max_length=64, pattern=NO_NUL)
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS, pattern=NO_NUL)
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: JsonFloat | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    approval_timeout_s: JsonFloat | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    on_timeout: OnTimeout = OnTimeout.REJECT
    #: stop the task (failed) once it has spent this much; None: the user's default
    max_cost_usd: MaxCostUsd | None = None
    max_tokens: MaxTokens | None = None
    retries: Retries = Field(
        default=0,
        description="Run the task again this many times at most if its runner dies (crash, kill, "
        "lost link, pod evicted or OOMKilled); never after a cancel, a rejection, its budget or "
        "a failure of its own. See cmbtask_protocol.retries.",
    )
    retry_backoff_s: RetryBackoffS = Field(
        default=DEFAULT_RETRY_BACKOFF_S,
        description="Seconds before the first retry; each further retry waits twice as long.",
    )


class TaskView(BaseModel):
    id: str
    session_id: str
    owner: str
    engine: str
    mode: str
    prompt: str
    params: dict[str, Any]
    phase: TaskPhase
    timeout_s: float | None = None
    approval_timeout_s: float | None = None
    on_timeout: OnTimeout
    max_cost_usd: float | None = None
    max_tokens: int | None = None
    #: the run the task is on: 1 for the first, one more for each retry
    attempt: int = 1
    retries: int = 0
    retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S
    #: when the current attempt became due (after a retry's backoff); None for the first
    retry_at: datetime | None = None
    executor: str | None = None
    handle: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ApprovalView(BaseModel):
    id: str
    session_id: str
    task_id: str
    kind: str
    prompt: str
    options: list[Decision]
    allow_text: bool
    context: dict[str, Any]
    status: ApprovalStatus
    on_timeout: OnTimeout
    decision: Decision | None = None
    response: str | None = None
    resolved_by: str | None = None
    created_at: datetime
    expires_at: datetime | None = None
    resolved_at: datetime | None = None


class ApprovalList(BaseModel):
    items: list[ApprovalView]


class ApprovalResolve(_Strict):
    decision: Decision
    text: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS, pattern=NO_NUL)


class EventPage(BaseModel):
    items: list[dict[str, Any]]
    last_seq: int
    has_more: bool


class ModeInfo(BaseModel):
    name: str
    title: str
    description: str
    engines: list[str]
    supports_resume: bool
    human_in_the_loop: bool
    utility: bool = False
    available: bool = True
    unavailable_reason: str | None = None
    #: when only a missing key holds the mode back: the variables, any one of which would do
    needs_keys: list[str] = Field(default_factory=list)
