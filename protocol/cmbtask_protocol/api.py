"""REST request and response bodies (``/api/...``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .phases import ApprovalStatus, Decision, OnTimeout, SessionStatus, TaskPhase

__all__ = [
    "MAX_PARAMS_BYTES",
    "MAX_PROMPT_CHARS",
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a stable ``code`` and a sentence for people."""

    code: str
    message: str
    detail: Any | None = None


class SessionCreate(_Strict):
    title: str = Field(default="Untitled session", min_length=1, max_length=MAX_TITLE_CHARS)
    mode: str = Field(default="planning-control", min_length=1, max_length=64)
    ttl_s: int | None = Field(default=None, ge=60, le=365 * 24 * 3600)


class SessionUpdate(_Strict):
    """PATCH body. ``version`` must equal the stored one (optimistic locking)."""

    version: int = Field(ge=1)
    title: str | None = Field(default=None, min_length=1, max_length=MAX_TITLE_CHARS)
    mode: str | None = Field(default=None, min_length=1, max_length=64)
    context: dict[str, Any] | None = None


class SessionView(BaseModel):
    id: str
    owner: str
    title: str
    mode: str
    status: SessionStatus
    version: int
    last_seq: int
    phase: str | None = None
    step: int | None = None
    plan: list[dict[str, Any]] | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)
    has_state: bool = False
    state_version: int = 0
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
    mode: str = Field(default="one-shot", min_length=1, max_length=64)
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    approval_timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    on_timeout: OnTimeout = OnTimeout.REJECT


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
    text: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)


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
