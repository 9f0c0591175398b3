"""The gateway's own records as the kubernetes executor needs them: sessions
and tasks for CmbTasks applied with kubectl, and the task facts that the
status sync mirrors into the objects.

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

from cmbtask_protocol import ACTIVE_TASK_PHASES, ApprovalStatus, SessionCreate, TaskCreate, TaskPhase
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import Approval, Session, Task
from ..services.sessions import SessionService
from ..services.tasks import TaskService

__all__ = ["ImportedIds", "Records"]

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
        self, db: async_sessionmaker[AsyncSession], sessions: SessionService, tasks: TaskService
    ) -> None:
        self._db = db
        self._sessions = sessions
        self._tasks = tasks

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
            pending = {
                a.task_id: a.prompt[:_PROMPT_CHARS]
                for a in await db.scalars(
                    select(Approval).where(
                        Approval.task_id.in_([t.id for t in tasks]),
                        Approval.status == ApprovalStatus.PENDING.value,
                    )
                )
            }
        return {
            (t.handle or "").partition("/")[2]: {
                "phase": TaskPhase(t.phase),
                "pendingApproval": pending.get(t.id),
            }
            for t in tasks
        }


def _backoff(spec: dict[str, Any]) -> dict[str, float]:
    """The spec's ``retryBackoffSeconds`` as ``TaskCreate`` takes it, when set."""
    seconds = spec.get("retryBackoffSeconds")
    return {} if seconds is None else {"retry_backoff_s": float(seconds)}
