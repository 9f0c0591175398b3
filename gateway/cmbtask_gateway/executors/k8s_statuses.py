"""What the gateway writes into a CmbTask's status, and when (pure).

Ownership: the operator writes the phase of starts and ends, the pod, exit
code and reason; the gateway writes ``status.approval`` (it alone knows the
approvals), the ``AwaitingApproval`` condition until the task ends, and the
``running ⇄ waiting_approval`` moves of the phase, which only it sees.

The condition is written in ``starting`` too: a runner can ask for an approval
before the operator has seen its pod running, and the object should not show an
approval pending without the condition that says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cmbtask_protocol import (
    FINAL_TASK_PHASES,
    ApprovalStatus,
    ConditionStatus,
    ConditionType,
    TaskPhase,
    set_condition,
)

__all__ = ["stale_approval_ids", "status_change"]

_SYNCED_PHASES = {TaskPhase.RUNNING.value, TaskPhase.WAITING_APPROVAL.value}
_FINAL_PHASES = {phase.value for phase in FINAL_TASK_PHASES}
_PENDING = ApprovalStatus.PENDING.value


def status_change(status: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that brings ``status`` to what the gateway knows.

    ``wanted`` may hold ``phase`` (a ``TaskPhase``) and ``approval`` (a
    ``status.approval`` dict with every key, or None)."""
    change: dict[str, Any] = {}
    running = status.get("phase") in _SYNCED_PHASES
    phase = wanted.get("phase")
    if running and phase is not None and phase.value in _SYNCED_PHASES and status.get("phase") != phase.value:
        change["phase"] = phase.value
    if "approval" not in wanted:
        return change
    approval = wanted["approval"]
    moved = _shown(approval) != status.get("approval")
    if moved:
        change["approval"] = approval  # its None values remove what an earlier one left
    ended = status.get("phase") in _FINAL_PHASES
    if not ended and (conditions := _condition(status, approval, moved)) is not None:
        change["conditions"] = conditions
    return change


def _shown(approval: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """How ``approval`` reads back from the API server: without its None keys."""
    return None if approval is None else {k: v for k, v in approval.items() if v is not None}


def _condition(
    status: Mapping[str, Any], approval: Mapping[str, Any] | None, moved: bool
) -> list[dict[str, Any]] | None:
    waiting = approval is not None and approval["state"] == _PENDING
    want = ConditionStatus.TRUE if waiting else ConditionStatus.FALSE
    conditions = status.get("conditions") or []
    have = next(
        (c.get("status") for c in conditions if c.get("type") == ConditionType.AWAITING_APPROVAL), None
    )
    if not ((have != want.value and (have is not None or waiting)) or (waiting and moved)):
        return None
    reason = "ApprovalPending" if waiting else "ApprovalResolved"
    message = approval["prompt"] if waiting and approval is not None else ""
    now = datetime.now(UTC)
    return set_condition(conditions, ConditionType.AWAITING_APPROVAL, want, now, reason, message)


def stale_approval_ids(seen: Mapping[str, Mapping[str, Any]], synced: set[str]) -> dict[str, str]:
    """CmbTask name → approval id, for objects outside the sync (their task
    ended) whose status still shows an approval pending."""
    out = {}
    for name, obj in seen.items():
        shown = (obj.get("status") or {}).get("approval") or {}
        if name not in synced and shown.get("state") == _PENDING and shown.get("id"):
            out[name] = str(shown["id"])
    return out
