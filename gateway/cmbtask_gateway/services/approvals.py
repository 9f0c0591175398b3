"""Approvals: created by runners, decided by people, expired by the sweeper.

The first decision wins: resolution is a conditional ``UPDATE … WHERE status
= 'pending'``, so two clients (or a client and the sweeper) racing on one
approval produce exactly one outcome, and the loser is told who won. Expiry
times live in the database, so the sweeper picks up where a previous gateway
process stopped.
"""

from __future__ import annotations

import builtins

from cmbtask_protocol import (
    ApprovalStatus,
    ApprovalView,
    Decision,
    EventType,
    RunnerApprovalDecision,
)
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import Approval, utcnow
from ..errors import Conflict, Invalid, NotFound
from ..runner_sockets import RunnerRegistry
from ..store import EventStore
from . import lifecycle
from .views import approval_view

__all__ = ["ApprovalService", "decision_frame"]


def decision_frame(row: Approval) -> RunnerApprovalDecision:
    return RunnerApprovalDecision(
        approval_id=row.id,
        status=ApprovalStatus(row.status),
        decision=Decision(row.decision) if row.decision else None,
        text=row.response,
        resolved_by=row.resolved_by,
    )


def _check_decision(row: Approval, decision: Decision, text: str | None) -> None:
    """``Invalid`` (422) for a decision the approval does not offer."""
    if decision not in {Decision(option) for option in row.options}:
        raise Invalid(
            f"decision {decision.value!r} is not offered; options: {', '.join(row.options)}",
            code="invalid_decision",
        )
    if text and not row.allow_text and decision not in {Decision.MODIFY, Decision.ANSWER}:
        raise Invalid("this approval takes no free text", code="invalid_decision")


class ApprovalService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: EventStore,
        registry: RunnerRegistry,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._registry = registry

    async def list(self, owner: str, status: str | None, session_id: str | None = None) -> list[ApprovalView]:
        conditions = [Approval.owner == owner]
        if status:
            conditions.append(Approval.status == status)
        if session_id:
            conditions.append(Approval.session_id == session_id)
        async with self._sessions() as db:
            rows = await db.scalars(select(Approval).where(*conditions).order_by(Approval.created_at))
            return [approval_view(row) for row in rows]

    async def pending_count(self) -> int:
        async with self._sessions() as db:
            count = await db.scalar(
                select(func.count())
                .select_from(Approval)
                .where(Approval.status == ApprovalStatus.PENDING.value)
            )
            return int(count or 0)

    async def _own(self, owner: str, approval_id: str) -> Approval:
        async with self._sessions() as db:
            row = await db.get(Approval, approval_id)
        if row is None or row.owner != owner:
            raise NotFound(f"approval {approval_id} not found")
        return row

    async def resolve(
        self,
        owner: str,
        approval_id: str,
        decision: Decision,
        text: str | None,
        *,
        resolved_by: str | None = None,
    ) -> ApprovalView:
        """Decide for ``owner``; ``resolved_by`` names who did when that is not
        the owner themself (a Kubernetes user deciding through kubectl)."""
        who_decided = resolved_by or owner
        row = await self._own(owner, approval_id)
        _check_decision(row, decision, text)
        async with self._store.write(row.session_id) as tx:
            result = await tx.db.execute(
                update(Approval)
                .where(Approval.id == approval_id, Approval.status == ApprovalStatus.PENDING.value)
                .values(
                    status=decision.status.value,
                    decision=decision.value,
                    response=text,
                    resolved_by=who_decided,
                    resolved_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                current = await tx.db.get(Approval, approval_id, populate_existing=True)
                assert current is not None
                who = f" by {current.resolved_by}" if current.resolved_by else ""
                raise Conflict(
                    f"approval already {current.status}{who}",
                    code="already_resolved",
                    detail=approval_view(current).model_dump(mode="json"),
                )
            fresh = await tx.db.get(Approval, approval_id, populate_existing=True)
            assert fresh is not None
            tx.emit(
                EventType.APPROVAL_RESOLVED,
                {
                    "approval_id": approval_id,
                    "status": decision.status.value,
                    "decision": decision.value,
                    "text": text,
                    "resolved_by": who_decided,
                },
                task_id=fresh.task_id,
            )
            await lifecycle.approval_closed(tx, fresh.task_id)
            frame = decision_frame(fresh)
            task_id = fresh.task_id
            tx.after_commit(lambda: self._registry.send(task_id, frame))
        return approval_view(fresh)

    async def expire_due(self) -> int:
        """Expire every pending approval past its deadline; tell the runners."""
        async with self._sessions() as db:
            due = list(
                await db.execute(
                    select(Approval.id, Approval.session_id).where(
                        Approval.status == ApprovalStatus.PENDING.value,
                        Approval.expires_at.is_not(None),
                        Approval.expires_at < utcnow(),
                    )
                )
            )
        expired = 0
        for approval_id, session_id in due:
            expired += await self._expire(approval_id, session_id)
        return expired

    async def _expire(self, approval_id: str, session_id: str) -> int:
        async with self._store.write(session_id) as tx:
            result = await tx.db.execute(
                update(Approval)
                .where(Approval.id == approval_id, Approval.status == ApprovalStatus.PENDING.value)
                .values(status=ApprovalStatus.EXPIRED.value, resolved_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return 0
            row = await tx.db.get(Approval, approval_id, populate_existing=True)
            assert row is not None
            tx.emit(
                EventType.APPROVAL_EXPIRED,
                {"approval_id": approval_id, "on_timeout": row.on_timeout},
                task_id=row.task_id,
            )
            await lifecycle.approval_closed(tx, row.task_id)
            frame, task_id = decision_frame(row), row.task_id
            tx.after_commit(lambda: self._registry.send(task_id, frame))
        return 1

    async def decisions_for(
        self, task_id: str, approval_ids: builtins.list[str]
    ) -> builtins.list[RunnerApprovalDecision]:
        """Decided approvals among those a reconnecting runner still waits for."""
        if not approval_ids:
            return []
        async with self._sessions() as db:
            rows = await db.scalars(
                select(Approval).where(
                    Approval.task_id == task_id,
                    Approval.id.in_(approval_ids),
                    Approval.status != ApprovalStatus.PENDING.value,
                )
            )
            return [decision_frame(row) for row in rows]
