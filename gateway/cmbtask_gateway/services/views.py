"""Row → wire model conversion, in one place."""

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
    return SessionView(
        id=row.id,
        owner=row.owner,
        title=row.title,
        mode=row.mode,
        status=row.status,
        version=row.version,
        last_seq=row.last_seq,
        phase=row.phase,
        step=row.step,
        plan=row.plan,
        context=row.context or {},
        history=row.history or [],
        has_state=row.state is not None,
        state_version=row.state_version,
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        expires_at=aware(row.expires_at),
    )


def task_view(row: Task) -> TaskView:
    return TaskView(
        id=row.id,
        session_id=row.session_id,
        owner=row.owner,
        engine=row.engine,
        mode=row.mode,
        prompt=row.prompt,
        params=row.params or {},
        phase=row.phase,
        timeout_s=row.timeout_s,
        approval_timeout_s=row.approval_timeout_s,
        on_timeout=row.on_timeout,
        max_cost_usd=row.max_cost_usd,
        max_tokens=row.max_tokens,
        executor=row.executor,
        handle=row.handle,
        exit_code=row.exit_code,
        reason=row.reason,
        created_at=aware(row.created_at),
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
    )


def approval_view(row: Approval) -> ApprovalView:
    return ApprovalView(
        id=row.id,
        session_id=row.session_id,
        task_id=row.task_id,
        kind=row.kind,
        prompt=row.prompt,
        options=row.options,
        allow_text=row.allow_text,
        context=row.context or {},
        status=row.status,
        on_timeout=row.on_timeout,
        decision=row.decision,
        response=row.response,
        resolved_by=row.resolved_by,
        created_at=aware(row.created_at),
        expires_at=aware(row.expires_at),
        resolved_at=aware(row.resolved_at),
    )
