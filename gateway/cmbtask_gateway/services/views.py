"""Row → wire model conversion, in one place: the views read the rows'
attributes (``from_attributes``), so a field added to both needs no code here."""

from __future__ import annotations

from datetime import UTC, datetime

from cmbtask_protocol import ApprovalView, SessionView, TaskView

from ..db.models import Approval, Session, Task

__all__ = ["approval_view", "aware", "session_view", "task_view"]


def aware(ts: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if ts is None or ts.tzinfo is not None:
        return ts
    return ts.replace(tzinfo=UTC)


def session_view(row: Session) -> SessionView:
    return SessionView.model_validate(row, from_attributes=True)


def task_view(row: Task) -> TaskView:
    return TaskView.model_validate(row, from_attributes=True)


def approval_view(row: Approval) -> ApprovalView:
    return ApprovalView.model_validate(row, from_attributes=True)
