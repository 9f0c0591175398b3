"""A pod's life, read as a ``CmbTask`` status: pure functions.

``read_pod`` says what a pod's state means for the task (including the
states a kubelet would sit in forever, such as an image that cannot be
pulled: those fail fast). ``status_patch`` turns that into a merge patch for
the CmbTask's status, never moving a task backwards and never touching a
final phase, so that replays of old pod events are harmless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cmbtask_protocol import (
    ConditionStatus,
    ConditionType,
    RunnerExit,
    TaskPhase,
    set_condition,
    signal_reason,
    timestamp,
)

__all__ = [
    "FAIL_FAST_REASONS",
    "RUNNER_EXIT_PHASES",
    "PodReport",
    "final_patch",
    "is_final",
    "read_pod",
    "set_condition",
    "status_patch",
    "timestamp",
]

#: waiting reasons after which a container never starts without a human
FAIL_FAST_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
#: the runner's exit codes (``cmbtask_protocol.RunnerExit``) for the endings
#: that are not failures of the pod; any other non-zero code is ``failed``
RUNNER_EXIT_PHASES: dict[int, tuple[TaskPhase, str]] = {
    RunnerExit.CANCELLED: (TaskPhase.CANCELLED, "task cancelled"),
    RunnerExit.TIMED_OUT: (TaskPhase.TIMED_OUT, "task timed out"),
}
_ORDER = {TaskPhase.QUEUED: 0, TaskPhase.STARTING: 1, TaskPhase.RUNNING: 2, TaskPhase.WAITING_APPROVAL: 2}


@dataclass(frozen=True, slots=True)
class PodReport:
    """What one observation of a pod says about its task."""

    phase: TaskPhase
    scheduled: bool = False
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    #: the pod will never run; delete it rather than let it wait
    fail_fast: bool = False


def is_final(phase: str | None) -> bool:
    return phase is not None and TaskPhase(phase).is_final


def read_pod(pod: Mapping[str, Any]) -> PodReport | None:
    """The task's view of ``pod``; None when the pod says nothing yet."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    scheduled = bool(pod.get("spec", {}).get("nodeName")) or _condition_true(status, "PodScheduled")
    container = _runner_status(status)
    state = container.get("state") or {}
    if phase == "Succeeded":
        return _terminated(TaskPhase.SUCCEEDED, state.get("terminated") or {}, scheduled)
    if phase == "Failed":
        return _failed(status, state.get("terminated") or {}, scheduled)
    if phase == "Running":
        started = (state.get("running") or {}).get("startedAt") or status.get("startTime")
        return PodReport(TaskPhase.RUNNING, scheduled=True, started_at=started)
    if phase == "Pending":
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in FAIL_FAST_REASONS:
            message = f"{waiting['reason']}: {waiting.get('message') or 'the runner container cannot start'}"
            return PodReport(
                TaskPhase.FAILED, scheduled, reason=waiting["reason"], message=message, fail_fast=True
            )
        return PodReport(TaskPhase.STARTING, scheduled=scheduled)
    return None


def _runner_status(status: Mapping[str, Any]) -> Mapping[str, Any]:
    containers: Sequence[Mapping[str, Any]] = status.get("containerStatuses") or []
    return containers[0] if containers else {}


def _condition_true(status: Mapping[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or [])


def _terminated(phase: TaskPhase, terminated: Mapping[str, Any], scheduled: bool) -> PodReport:
    code = terminated.get("exitCode", 0 if phase is TaskPhase.SUCCEEDED else None)
    return PodReport(
        phase,
        scheduled,
        exit_code=code,
        reason=terminated.get("reason") or ("Completed" if phase is TaskPhase.SUCCEEDED else "Error"),
        message=terminated.get("message") or f"runner exited with code {code}",
        started_at=terminated.get("startedAt"),
        finished_at=terminated.get("finishedAt"),
    )


def _failed(status: Mapping[str, Any], terminated: Mapping[str, Any], scheduled: bool) -> PodReport:
    if status.get("reason") == "DeadlineExceeded":
        message = status.get("message") or "the task ran past its timeout"
        return PodReport(
            TaskPhase.TIMED_OUT,
            scheduled,
            exit_code=terminated.get("exitCode"),
            reason="DeadlineExceeded",
            message=message,
            finished_at=terminated.get("finishedAt"),
        )
    report = _terminated(TaskPhase.FAILED, terminated, scheduled)
    if report.exit_code == RunnerExit.TERMINATED:
        # the kubelet's SIGTERM, which no cancel asked for (a cancel marks the
        # task final before the operator deletes the pod): deleted or drained
        return PodReport(**{**_fields(report), "reason": "PodDeleted", "message": signal_reason("SIGTERM")})
    if report.exit_code in RUNNER_EXIT_PHASES and report.reason != "OOMKilled":
        phase, words = RUNNER_EXIT_PHASES[report.exit_code]
        return PodReport(**{**_fields(report), "phase": phase, "message": f"the runner reported: {words}"})
    if report.reason == "OOMKilled":
        message = "OOMKilled: the runner exceeded its memory limit"
        return PodReport(**{**_fields(report), "message": message})
    if not terminated and status.get("reason"):
        reason = status["reason"]
        return PodReport(**{**_fields(report), "reason": reason, "message": status.get("message") or reason})
    return report


def _fields(report: PodReport) -> dict[str, Any]:
    return {name: getattr(report, name) for name in PodReport.__slots__}


# ---- status patches ------------------------------------------------------------


def status_patch(report: PodReport, current: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """The status merge patch that ``report`` calls for; None if nothing changes."""
    old_phase = current.get("phase")
    if is_final(old_phase):
        return None
    if report.phase.is_final:
        return final_patch(current, report.phase, report.reason or "", report.message or "", now, report)
    phase = _forward(old_phase, report.phase)
    patch: dict[str, Any] = {"phase": phase.value}
    conditions: list[dict[str, Any]] = list(current.get("conditions") or [])
    if report.scheduled:
        conditions = set_condition(conditions, ConditionType.POD_SCHEDULED, ConditionStatus.TRUE, now)
    if report.phase is TaskPhase.RUNNING:
        conditions = set_condition(conditions, ConditionType.RUNNING, ConditionStatus.TRUE, now)
        patch["startTime"] = current.get("startTime") or report.started_at or timestamp(now)
    patch["conditions"] = conditions
    return _changes(patch, current)


def final_patch(
    current: Mapping[str, Any],
    phase: TaskPhase,
    reason: str,
    message: str,
    now: datetime,
    report: PodReport | None = None,
) -> dict[str, Any]:
    """Status of a task that ended, for whatever cause."""
    conditions: list[dict[str, Any]] = list(current.get("conditions") or [])
    conditions = set_condition(conditions, ConditionType.RUNNING, ConditionStatus.FALSE, now, reason)
    conditions = set_condition(conditions, ConditionType.AWAITING_APPROVAL, ConditionStatus.FALSE, now)
    if report is not None and report.scheduled:
        conditions = set_condition(conditions, ConditionType.POD_SCHEDULED, ConditionStatus.TRUE, now)
    done = ConditionType.SUCCEEDED if phase is TaskPhase.SUCCEEDED else ConditionType.FAILED
    conditions = set_condition(conditions, done, ConditionStatus.TRUE, now, reason, message)
    patch: dict[str, Any] = {
        "phase": phase.value,
        "reason": reason or None,
        "message": message or None,
        "finishTime": (report.finished_at if report else None) or timestamp(now),
        "conditions": conditions,
    }
    if report is not None and report.exit_code is not None:
        patch["exitCode"] = report.exit_code
    if report is not None and report.started_at and not current.get("startTime"):
        patch["startTime"] = report.started_at
    return patch


def _forward(old: str | None, new: TaskPhase) -> TaskPhase:
    # A replayed Pending after Running, or Running while the gateway says the
    # task waits for an approval, must not move the phase back.
    if old is None:
        return new
    previous = TaskPhase(old)
    return previous if _ORDER.get(previous, 0) >= _ORDER.get(new, 0) else new


def _changes(patch: dict[str, Any], current: Mapping[str, Any]) -> dict[str, Any] | None:
    changed = {key: value for key, value in patch.items() if current.get(key) != value}
    return changed or None
