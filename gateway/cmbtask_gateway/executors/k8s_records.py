"""The gateway's own records as the kubernetes executor needs them: sessions
and tasks for CmbTasks applied with kubectl, the task facts that the
status sync mirrors into the objects, and decisions made with kubectl, which
go through the same ``ApprovalService.resolve`` as the UI's and REST's.

An imported task's id is the CmbTask's ``metadata.uid`` (the id the
operator gives the runner pod of an object whose spec names no task), and its
session's id, when the spec names none, is derived from the uid. Registering
is therefore idempotent: a gateway that crashed after registering an object
but before labelling it finds the same task again on restart instead of
making a second one, and ``launch`` recognises the still-unlabelled object.
"""

from __future__ import annotations

import uuid
from typing import Any

from cmbtask_protocol import (
    ACTIVE_TASK_PHASES,
    ApprovalStatus,
    DecisionEventReason,
    SessionCreate,
    TaskCreate,
    TaskPhase,
    approval_summary,
    timestamp,
)
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import Approval, Session, Task
from ..errors import Conflict, Invalid, NotFound
from ..services.approvals import ApprovalService
from ..services.sessions import SessionService
from ..services.tasks import TaskService
from .k8s_decisions import KubectlDecision, Outcome, choose_approval

__all__ = ["ImportedIds", "Records", "approval_status"]

# Fixed forever: changing it would give a re-registered object a second session.
_IMPORT_NAMESPACE = uuid.UUID("5c1e0a52-3b0f-4f43-9a55-63a6d1d0c0de")
#: approval prompts are long; the status shows the start of one
_PROMPT_CHARS = 200


class ImportedIds:
    """The ids a kubectl-made CmbTask's records get, from its uid."""

    def __init__(self, uid: str) -> None:
        self.task_id = uid
        self.session_id = str(uuid.uuid5(_IMPORT_NAMESPACE, f"session/{uid}"))


class Records:
    """Reached through the gateway's own services: an imported task is stored,
    published to connected clients and dispatched like any submitted one."""

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        sessions: SessionService,
        tasks: TaskService,
        approvals: ApprovalService,
    ) -> None:
        self._db = db
        self._sessions = sessions
        self._tasks = tasks
        self._approvals = approvals

    async def register(self, owner: str, name: str, uid: str, spec: dict[str, Any]) -> tuple[str, str]:
        """The (task id, session id) of the CmbTask with this uid, made once."""
        ids = ImportedIds(uid)
        async with self._db() as db:
            task = await db.get(Task, ids.task_id)
            if task is not None:
                return task.id, task.session_id
            session_id = spec.get("sessionId") or ids.session_id
            made_session = await db.get(Session, session_id) is not None
        if not spec.get("sessionId") and not made_session:
            title = f"kubectl: {name}"
            body = SessionCreate(title=title, mode=spec.get("mode") or "one-shot")
            await self._sessions.create(owner, body, session_id=session_id)
        task_body = TaskCreate(
            engine=spec["engine"], mode=spec.get("mode") or "one-shot", prompt=spec.get("prompt") or "",
            params=spec.get("params") or {}, timeout_s=spec.get("timeoutSeconds"),
            approval_timeout_s=spec.get("approvalTimeoutSeconds"),
            on_timeout=spec.get("onTimeout") or "reject", retries=spec.get("retries") or 0,
            **_backoff(spec),
        )  # fmt: skip
        view = await self._tasks.submit(owner, session_id, task_body, task_id=ids.task_id)
        return view.id, session_id

    async def wanted_statuses(self, namespace: str) -> dict[str, dict[str, Any]]:
        """CmbTask name → the status fields the gateway knows, for active tasks."""
        async with self._db() as db:
            tasks = list(
                await db.scalars(
                    select(Task).where(
                        Task.executor == "kubernetes",
                        Task.handle.like(f"{namespace}/%"),
                        Task.phase.in_([p.value for p in ACTIVE_TASK_PHASES]),
                    )
                )
            )
            # only each task's latest approval: a long interactive task may have hundreds
            newest = (
                select(Approval.task_id, func.max(Approval.created_at).label("at"))
                .where(Approval.task_id.in_([t.id for t in tasks]))
                .group_by(Approval.task_id)
                .subquery()
            )
            joined = select(Approval).join(
                newest, and_(Approval.task_id == newest.c.task_id, Approval.created_at == newest.c.at)
            )
            latest = {row.task_id: row for row in await db.scalars(joined)}
        return {
            (t.handle or "").partition("/")[2]: {
                "phase": TaskPhase(t.phase),
                "approval": approval_status(latest[t.id]) if t.id in latest else None,
            }
            for t in tasks
        }

    async def approvals_by_id(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """``status.approval`` of these approvals, for objects whose task ended
        before the sync saw how their approval did."""
        async with self._db() as db:
            rows = await db.scalars(select(Approval).where(Approval.id.in_(ids)))
            return {row.id: approval_status(row) for row in rows}

    async def decide(self, task_id: str, wanted: KubectlDecision) -> Outcome:
        """Apply a kubectl decision to the task's approval, first one wins."""
        async with self._db() as db:
            rows = list(await db.scalars(select(Approval).where(Approval.task_id == task_id)))
        row = choose_approval(rows, wanted.approval)
        said = f"decision {wanted.decision.value} by {wanted.resolved_by}"
        if row is None:
            named = f"approval {wanted.approval}" if wanted.approval else "no approval"
            return Outcome(DecisionEventReason.IGNORED, f"{said} not applied: {named} of this task")
        short = approval_summary(ApprovalStatus(row.status), row.kind, row.id)
        if row.status != ApprovalStatus.PENDING.value:
            return Outcome(DecisionEventReason.IGNORED, f"{said} not applied: {_ended(row, short)}")
        try:
            view = await self._approvals.resolve(
                row.owner, row.id, wanted.decision, wanted.text, resolved_by=wanted.resolved_by
            )
        except Conflict as error:  # decided meanwhile by someone else, or expired
            return Outcome(DecisionEventReason.IGNORED, f"{said} not applied: {error}")
        except (Invalid, NotFound) as error:
            return Outcome(DecisionEventReason.REFUSED, f"{said} refused: {error}")
        done = approval_summary(view.status, view.kind, view.id)
        return Outcome(DecisionEventReason.APPLIED, f"{said} applied: approval {done}")


def _ended(row: Approval, short: str) -> str:
    by = f" by {row.resolved_by}" if row.resolved_by else ""
    return f"approval {short} is no longer pending (it is {row.status}{by})"


def approval_status(row: Approval) -> dict[str, Any]:
    """``status.approval`` (``CmbTaskApproval``, camelCase) of one approval.
    Every key is present, None where unset, so that a merge patch removes what
    an earlier approval left."""
    state = ApprovalStatus(row.status)
    return {
        "id": row.id,
        "kind": row.kind,
        "prompt": row.prompt[:_PROMPT_CHARS],
        "options": [str(o) for o in row.options],
        "state": state.value,
        "expiresAt": timestamp(row.expires_at) if row.expires_at else None,
        "resolvedBy": row.resolved_by,
        "summary": approval_summary(state, row.kind, row.id),
    }


def _backoff(spec: dict[str, Any]) -> dict[str, float]:
    """The spec's ``retryBackoffSeconds`` as ``TaskCreate`` takes it, when set."""
    seconds = spec.get("retryBackoffSeconds")
    return {} if seconds is None else {"retry_backoff_s": float(seconds)}
