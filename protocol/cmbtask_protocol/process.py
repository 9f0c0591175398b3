"""The runner process contract: what a runner process is started with and
what it leaves behind when it ends.

Whoever starts a runner (the local executor, the operator's pod builder)
sets these environment variables; whoever watches one end (the local
executor, the operator's status mirror, the gateway's watchdog) reads its
exit code and ``exit.json``. Both sides read the names from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Final

from .events import EventType

__all__ = [
    "CANCEL_TIMEOUT",
    "ENV_GATEWAY_URL",
    "ENV_SESSION_ID",
    "ENV_TASK_ID",
    "ENV_TASK_TOKEN",
    "ENV_TRACEPARENT",
    "ENV_WORK_DIR",
    "EXIT_FILE",
    "RunnerExit",
    "signal_reason",
    "tracing_configured",
]

ENV_TASK_ID: Final = "CMBTASK_TASK_ID"
ENV_SESSION_ID: Final = "CMBTASK_SESSION_ID"
ENV_GATEWAY_URL: Final = "CMBTASK_GATEWAY_URL"
#: the per-task token; never passed on to the task's own child processes
ENV_TASK_TOKEN: Final = "CMBTASK_TASK_TOKEN"
ENV_WORK_DIR: Final = "CMBTASK_WORK_DIR"
#: the W3C trace context (``00-<trace id>-<span id>-<flags>``) of the gateway's
#: launch span, set only while the gateway traces: the runner's spans join the
#: task's trace under it. The name is OpenTelemetry's for environment carriers.
ENV_TRACEPARENT: Final = "TRACEPARENT"

#: written atomically into the work directory as the runner exits:
#: ``{"exit_code", "final_event", "reason", …}``
EXIT_FILE: Final = "exit.json"

#: the cancel reason that makes a task end ``timed_out`` instead of ``cancelled``
CANCEL_TIMEOUT: Final = "timeout"


class RunnerExit(IntEnum):
    """The runner process's exit code, one per way it can end."""

    SUCCEEDED = 0
    FAILED = 1
    CANCELLED = 2
    TIMED_OUT = 3
    #: the link to the gateway was refused for good, or never came back
    LINK_LOST = 4
    #: the final event was sent but never acknowledged
    FINAL_NOT_ACKED = 5
    #: stopped by a signal (SIGTERM, SIGINT) before any cancel reached it: its
    #: final event is ``task.failed`` naming the ``signal``; the gateway, which
    #: knows whether it asked for a cancel, may still end the task cancelled
    TERMINATED = 6
    #: started without its configuration (task id, gateway URL, token)
    USAGE = 64

    @classmethod
    def for_final_event(cls, event_type: str) -> RunnerExit:
        return _BY_FINAL_EVENT[event_type]

    @property
    def meaning(self) -> str:
        """How a person would say it: "the runner …"."""
        return _MEANINGS[self]


_BY_FINAL_EVENT: Final[dict[str, RunnerExit]] = {
    EventType.TASK_SUCCEEDED: RunnerExit.SUCCEEDED,
    EventType.TASK_FAILED: RunnerExit.FAILED,
    EventType.TASK_CANCELLED: RunnerExit.CANCELLED,
    EventType.TASK_TIMED_OUT: RunnerExit.TIMED_OUT,
}

_MEANINGS: Final = {
    RunnerExit.SUCCEEDED: "succeeded",
    RunnerExit.FAILED: "failed",
    RunnerExit.CANCELLED: "cancelled",
    RunnerExit.TIMED_OUT: "timed out",
    RunnerExit.LINK_LOST: "lost its link to the gateway",
    RunnerExit.FINAL_NOT_ACKED: "could not report its final event",
    RunnerExit.TERMINATED: "was terminated by a signal that no cancel asked for",
    RunnerExit.USAGE: "was started without its configuration",
}


def signal_reason(signal_name: str) -> str:
    """Why a task failed whose runner was stopped by ``signal_name`` unasked:
    for a pod, the kubelet's SIGTERM when the pod is deleted or its node drained."""
    return (
        f"runner terminated by {signal_name}: its pod was deleted or its node drained, "
        "or its process was stopped from outside; no cancel was requested"
    )


def tracing_configured(env: Mapping[str, str]) -> bool:
    """Does ``env`` ask for OpenTelemetry traces over OTLP? The gateway and the
    runner both follow the standard variables, read the same way: off unless
    ``OTEL_TRACES_EXPORTER`` names ``otlp`` or an OTLP endpoint is set, and off
    whenever ``OTEL_SDK_DISABLED=true`` or the exporter list is ``none``."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",")} - {""}
    if exporters:
        return "otlp" in exporters
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
