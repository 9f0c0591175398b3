"""Lifecycle states shared by every component.

The names are the wire values: they are stored in the database, sent on both
WebSockets and shown in the UI, so they may be added to but never renamed.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVE_TASK_PHASES",
    "FINAL_TASK_PHASES",
    "ApprovalStatus",
    "Decision",
    "OnTimeout",
    "SessionStatus",
    "TaskPhase",
]


class TaskPhase(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_final(self) -> bool:
        return self in FINAL_TASK_PHASES


FINAL_TASK_PHASES = frozenset(
    {TaskPhase.SUCCEEDED, TaskPhase.FAILED, TaskPhase.CANCELLED, TaskPhase.TIMED_OUT}
)
ACTIVE_TASK_PHASES = frozenset({TaskPhase.STARTING, TaskPhase.RUNNING, TaskPhase.WAITING_APPROVAL})


class SessionStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    EXPIRED = "expired"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    MODIFIED = "modified"
    ANSWERED = "answered"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_resolved(self) -> bool:
        return self in {
            ApprovalStatus.APPROVED,
            ApprovalStatus.REJECTED,
            ApprovalStatus.MODIFIED,
            ApprovalStatus.ANSWERED,
        }


class Decision(StrEnum):
    """What a human answers to an approval request."""

    APPROVE = "approve"
    REJECT = "reject"
    MODIFY = "modify"
    ANSWER = "answer"

    @property
    def status(self) -> ApprovalStatus:
        return _DECISION_STATUS[self]


_DECISION_STATUS = {
    Decision.APPROVE: ApprovalStatus.APPROVED,
    Decision.REJECT: ApprovalStatus.REJECTED,
    Decision.MODIFY: ApprovalStatus.MODIFIED,
    Decision.ANSWER: ApprovalStatus.ANSWERED,
}


class OnTimeout(StrEnum):
    """What a runner does when an approval expires unanswered."""

    REJECT = "reject"
    APPROVE = "approve"
    FAIL = "fail"
