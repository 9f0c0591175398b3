"""The engine plugin interface.

An engine is a class registered in the ``cmbtask.engines`` entry-point group.
The runner constructs it with no arguments, calls ``validate`` before the task
starts and ``run`` in a worker thread. Engines are synchronous on purpose:
the workflows they wrap (CMBAgent, AG2, user scripts) block, print and ask for
input; the runner's event loop keeps the gateway link alive meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from cmbtask_protocol import ApprovalStatus, Decision, OnTimeout, TaskSpec

__all__ = [
    "ApprovalOutcome",
    "Engine",
    "EngineContext",
    "EngineError",
    "StateConflict",
    "TaskCancelled",
]


class EngineError(Exception):
    """The task cannot run as asked (bad params, missing file); ends it ``failed``
    with this message and no traceback."""


class TaskCancelled(Exception):
    """Raised inside an engine when the task is cancelled while it waits."""


@dataclass(frozen=True, slots=True)
class ApprovalOutcome:
    """How an approval ended, with the task's timeout policy already applied."""

    status: ApprovalStatus
    decision: Decision | None
    text: str | None
    resolved_by: str | None
    #: after an expiry: the policy that was followed
    on_timeout: OnTimeout | None = None

    @property
    def approved(self) -> bool:
        """True for approve/modify/answer, and for expiry under ``approve``."""
        if self.status is ApprovalStatus.EXPIRED:
            return self.on_timeout is OnTimeout.APPROVE
        return self.status in {
            ApprovalStatus.APPROVED,
            ApprovalStatus.MODIFIED,
            ApprovalStatus.ANSWERED,
        }


class EngineContext(Protocol):
    """What an engine may do. Every method is safe to call from any thread."""

    work_dir: Path
    cancelled: threading.Event

    @property
    def task(self) -> TaskSpec:
        """The task being run (read-only)."""

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """Send one event (buffered and delivered exactly once)."""

    def request_approval(
        self,
        prompt: str,
        *,
        kind: str = "approval",
        options: Sequence[Decision] = (Decision.APPROVE, Decision.REJECT),
        allow_text: bool = False,
        context: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        on_timeout: OnTimeout | None = None,
    ) -> ApprovalOutcome:
        """Ask a human and block until decided, expired or cancelled.

        Raises ``TaskCancelled`` if the task is cancelled while waiting, and
        ``EngineError`` if it expires under the ``fail`` policy.
        """

    def load_state(self) -> dict[str, Any] | None:
        """The session's saved state when the task started (None if none)."""

    def save_state(self, state: dict[str, Any], checkpoint: str = "") -> int:
        """Save session state; returns the new version."""


class Engine(Protocol):
    name: ClassVar[str]

    def validate(self, task: TaskSpec) -> None:
        """Raise ``EngineError`` if the task's mode or params cannot run."""

    def run(self, ctx: EngineContext) -> dict[str, Any] | None:
        """Do the work. Return a small result dict for ``task.succeeded``;
        raise ``EngineError``/any exception for ``task.failed`` and
        ``TaskCancelled`` when ``ctx.cancelled`` is seen."""


class StateConflict(EngineError):
    """The session's state changed since this task read it; nothing was saved.

    Optimistic locking on the session ``version``: a task saves against the
    version it started from (or last saved), never over someone else's write.
    """

    def __init__(self, expected: int | None, stored: int, message: str = "") -> None:
        detail = f": {message}" if message else ""
        super().__init__(
            f"session state changed elsewhere (expected version {expected}, stored {stored}); "
            f"not saved{detail}"
        )
        self.expected = expected
        self.stored = stored
