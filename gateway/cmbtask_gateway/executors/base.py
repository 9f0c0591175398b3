"""The executor interface: how the gateway starts and stops runners.

Two backends implement it: ``local`` (one detached OS process per task) and
``kubernetes`` (one ``CmbTask`` object per task, turned into a pod by the
operator). The gateway never cares which: it records the returned handle on
the task, asks ``inspect`` when a runner goes quiet, and ``adopt``s every
unfinished task after a restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cmbtask_protocol import PROVIDER_KEY_VARIABLES

__all__ = ["Executor", "ExecutorError", "ExecutorStatus", "LaunchRequest", "without_provider_keys"]


class ExecutorError(Exception):
    """A runner could not be launched or controlled; the message is for users."""


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    task_id: str
    session_id: str
    owner: str
    engine: str
    mode: str
    #: where the runner dials back (``ws://host:port``); the runner appends paths
    gateway_url: str
    #: per-task runner token; never logged
    token: str
    timeout_s: float | None = None
    #: which run of the task this is (1 first): a retry needs a runner of its own
    attempt: int = 1
    #: the task's engine params: an executor that hands the task to someone who
    #: validates it (the operator, from the CmbTask spec) passes them on
    params: Mapping[str, Any] = field(default_factory=dict)
    #: the owner's provider keys (``OPENAI_API_KEY`` …) for the runner's environment; never logged
    provider_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: the launch span's W3C traceparent while the gateway traces: the runner's
    #: spans join the task's trace under it (``ENV_TRACEPARENT``)
    trace_parent: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutorStatus:
    handle: str
    alive: bool
    exit_code: int | None = None
    #: why it is not alive, in words a user understands ("killed by signal 9")
    reason: str | None = None
    #: it died of its environment, not of its task (``cmbtask_protocol.runner_died``):
    #: the task may be retried
    died: bool = False


class Executor(Protocol):
    """What the gateway needs from a backend. All methods are idempotent."""

    name: str

    async def start(self) -> None:
        """Prepare clients, watchers, reapers. Called once at gateway start."""

    async def launch(self, request: LaunchRequest) -> str:
        """Start a runner for the task; return an opaque handle to store."""

    async def cancel(self, handle: str, *, grace_s: float) -> None:
        """Stop the runner: politely (SIGTERM / pod delete), then by force."""

    async def inspect(self, handle: str) -> ExecutorStatus:
        """Is the runner alive? If not, how did it end?"""

    async def adopt(self, handles: Sequence[str]) -> list[ExecutorStatus]:
        """After a gateway restart: take over runners started by a previous
        gateway and report which of them are still alive."""

    async def close(self) -> None:
        """Release resources. Runners keep running: they outlive the gateway."""


def without_provider_keys(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` less every provider key variable: a runner gets only the keys its
    user stored, unless the admin lets it fall back to the gateway's own."""
    variables = set(PROVIDER_KEY_VARIABLES.values())
    return {key: value for key, value in env.items() if key not in variables}
