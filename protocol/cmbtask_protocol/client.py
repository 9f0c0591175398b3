"""Frames on the client socket ``/ws/sessions/{id}?after=N``.

Server → client: stored events (``Event`` envelopes, which carry ``seq``) and
control frames, whose ``type`` starts with ``ws.`` and which carry no ``seq``.
Client → server: the commands below, discriminated by ``type``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .api import TaskCreate
from .jsontypes import NO_NUL, StorableText
from .phases import Decision

__all__ = [
    "CLOSE_AUTH",
    "CLOSE_BAD_FRAME",
    "CLOSE_CONFLICT",
    "CLOSE_LIMIT",
    "CLOSE_NOT_FOUND",
    "CLOSE_SHUTDOWN",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOO_BIG",
    "CLOSE_UNAVAILABLE",
    "CancelTaskCommand",
    "ClientCommand",
    "PingCommand",
    "ResolveApprovalCommand",
    "SubmitTaskCommand",
    "WsError",
    "WsHeartbeat",
    "WsHello",
    "WsPong",
    "WsReplayed",
    "WsResult",
]

# WebSocket close codes (4000-4999 are the application's own).
CLOSE_SHUTDOWN = 1001  # gateway going away: reconnect with your cursor
CLOSE_TOO_BIG = 1009  # frame over the size limit
CLOSE_UNAVAILABLE = 1013  # the database is unreachable: reconnect (with your cursor) shortly
CLOSE_BAD_FRAME = 4400  # too many malformed frames in a row
CLOSE_AUTH = 4401  # missing or wrong token
CLOSE_NOT_FOUND = 4404  # no such session (or not yours)
CLOSE_SLOW_CONSUMER = 4408  # could not keep up: reconnect with ``after``
CLOSE_CONFLICT = 4409  # runner socket replaced by a newer connection
CLOSE_LIMIT = 4429  # over a per-user limit (too many sockets): retry later


class _Command(StorableText):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, max_length=100, description="echoed in ws.result")


class SubmitTaskCommand(_Command):
    type: Literal["submit_task"]
    task: TaskCreate


class ResolveApprovalCommand(_Command):
    type: Literal["resolve_approval"]
    approval_id: str = Field(max_length=100, pattern=NO_NUL)
    decision: Decision
    text: str | None = Field(default=None, max_length=100_000, pattern=NO_NUL)


class CancelTaskCommand(_Command):
    type: Literal["cancel_task"]
    task_id: str = Field(max_length=100, pattern=NO_NUL)


class PingCommand(_Command):
    type: Literal["ping"]


ClientCommand = Annotated[
    SubmitTaskCommand | ResolveApprovalCommand | CancelTaskCommand | PingCommand,
    Field(discriminator="type"),
]


class WsHello(BaseModel):
    """First frame after accept: where the backlog starts and ends."""

    type: Literal["ws.hello"] = "ws.hello"
    session_id: str
    after: int
    last_seq: int
    heartbeat_s: float


class WsReplayed(BaseModel):
    """Sent once the backlog (``seq`` <= ``last_seq``) is out; live follows."""

    type: Literal["ws.replayed"] = "ws.replayed"
    last_seq: int


class WsHeartbeat(BaseModel):
    type: Literal["ws.heartbeat"] = "ws.heartbeat"
    last_seq: int


class WsPong(BaseModel):
    type: Literal["ws.pong"] = "ws.pong"
    id: str | None = None


class WsResult(BaseModel):
    """Answer to a command that carried an ``id``."""

    type: Literal["ws.result"] = "ws.result"
    id: str | None = None
    ok: bool
    result: dict[str, Any] = Field(default_factory=dict)


class WsError(BaseModel):
    """A command was refused; the connection stays open."""

    type: Literal["ws.error"] = "ws.error"
    id: str | None = None
    code: str
    message: str
