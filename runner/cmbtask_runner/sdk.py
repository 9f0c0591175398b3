"""The SDK a ``script`` task's code imports: ``from cmbtask_runner import sdk``.

A script runs as a child process of the runner; this module talks to the
runner over the Unix socket named in ``CMBTASK_SDK_SOCKET`` (one JSON line per
request and per answer, one connection per call, so it is thread-safe and
needs nothing beyond the standard library). Through it a script can emit
events, ask a human for approval or for text (blocking, with a timeout), and
load or save the session's state::

    from cmbtask_runner import sdk

    sdk.emit("agent.message", {"agent": "me", "content": "hello"})
    if sdk.request_approval("Delete the scratch files?").approved:
        ...
    name = sdk.ask("Which dataset?")
    state = sdk.load_state() or {}
    sdk.save_state({**state, "done": True})
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SOCKET_ENV",
    "Outcome",
    "SdkError",
    "ask",
    "emit",
    "load_state",
    "request_approval",
    "save_state",
]

SOCKET_ENV = "CMBTASK_SDK_SOCKET"
_MAX_ANSWER = 64 * 1024 * 1024


class SdkError(Exception):
    """The runner refused the call or is not there."""


@dataclass(frozen=True)
class Outcome:
    """How an approval ended, with the task's timeout policy already applied."""

    status: str  # approved | rejected | modified | answered | expired
    approved: bool
    decision: str | None = None
    text: str | None = None
    resolved_by: str | None = None
    on_timeout: str | None = None  # after an expiry: the policy followed


def _call(op: str, **fields: Any) -> dict[str, Any]:
    path = os.environ.get(SOCKET_ENV)
    if not path:
        raise SdkError(f"{SOCKET_ENV} is not set: this code is not running inside a cmbtask script task")
    request = json.dumps({"op": op, **fields}, default=str).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        conn.sendall(request)
        answer = _read_line(conn)
    reply: dict[str, Any] = json.loads(answer)
    if not reply.get("ok"):
        raise SdkError(str(reply.get("error", "the runner refused the call")))
    return reply


def _read_line(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < _MAX_ANSWER:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            break
    if not chunks:
        raise SdkError("the runner closed the connection without an answer")
    return b"".join(chunks)


def emit(event_type: str, data: dict[str, Any] | None = None) -> None:
    """Send one event to everyone watching the session."""
    _call("emit", event_type=event_type, data=data or {})


def request_approval(
    prompt: str,
    *,
    kind: str = "approval",
    options: Sequence[str] = ("approve", "reject"),
    allow_text: bool = False,
    context: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    on_timeout: str | None = None,
) -> Outcome:
    """Ask a human; block until answered, expired (policy applied) or cancelled.

    Under the ``fail`` policy an expiry ends the task: the runner stops the
    script and reports the task failed.
    """
    reply = _call(
        "approval",
        prompt=prompt,
        kind=kind,
        options=list(options),
        allow_text=allow_text,
        context=context or {},
        timeout_s=timeout_s,
        on_timeout=on_timeout,
    )
    return Outcome(**reply["outcome"])


def ask(prompt: str, *, timeout_s: float | None = None) -> str | None:
    """Ask a human for free text; None when rejected or expired."""
    outcome = request_approval(
        prompt, kind="input", options=("answer", "reject"), allow_text=True, timeout_s=timeout_s
    )
    return outcome.text if outcome.approved else None


def load_state() -> dict[str, Any] | None:
    """The session's saved state when the task started, or the last one saved since."""
    state: dict[str, Any] | None = _call("load_state")["state"]
    return state


def save_state(state: dict[str, Any], checkpoint: str = "") -> int:
    """Save the session's state; returns the new version. ``SdkError`` on a conflict."""
    return int(_call("save_state", state=state, checkpoint=checkpoint)["version"])
