"""A task's submission as one synchronous Core transaction.

Submitting checks the session, the owner's limits and budget defaults, finds
the task it waits behind, inserts it, appends the session's history and stores
``task.queued``: seven or eight statements. Through the ORM on aiosqlite each
was a hop to the driver's thread, and all of it ran under the one writer's
lock, so 50 tasks submitted at once were stored one every 15 ms and the
dispatcher's first claim waited behind the last of them. Here it is one
function for ``EventStore.write_rows``: one hop per submission.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from cmbtask_protocol import EventType, SessionStatus, TaskCreate, TaskPhase, TaskView
from sqlalchemy import Connection, Table, insert, select, update

from ..db.models import Event, Session, Task, utcnow
from ..errors import Conflict, NotFound
from ..limits import UserLimits
from ..store import Numberer, RowWork
from .lifecycle import queued_event, waiting_behind
from .user_settings import task_budget
from .views import task_view

__all__ = ["Submission", "store_submission"]

_tasks = cast(Table, Task.__table__)
_sessions = cast(Table, Session.__table__)
_events = cast(Table, Event.__table__)


@dataclass(frozen=True, slots=True)
class Submission:
    task_id: str
    session_id: str
    owner: str
    body: TaskCreate
    #: the body's params in normal form (``TaskService._validate``)
    params: dict[str, Any]
    trace_parent: str | None


def store_submission(
    connection: Connection, number: Numberer, *, submission: Submission, limits: UserLimits | None
) -> RowWork[TaskView]:
    """Queue the task; NotFound, Conflict or LimitExceeded roll it all back."""
    sub = submission
    parallel, history = _active_session(connection, sub.session_id, sub.owner)
    if limits is not None:
        limits.check_task_submission(connection, sub.owner)
    behind = waiting_behind(connection, sub.session_id, parallel)
    values = _task_values(sub, task_budget(connection, sub.owner, sub.body))
    connection.execute(insert(_tasks).values(values))
    entry = {"ts": datetime.now(UTC).isoformat(), "task_id": sub.task_id, "role": "user"}
    entry |= {"prompt": sub.body.prompt, "engine": sub.body.engine, "mode": sub.body.mode}
    changes: dict[str, Any] = {"history": [*history, entry]}
    if behind is None:
        changes["phase"] = TaskPhase.QUEUED.value
    connection.execute(update(_sessions).where(_sessions.c.id == sub.session_id).values(changes))
    row: dict[str, Any] = {
        "session_id": sub.session_id,
        "task_id": sub.task_id,
        "rseq": None,
        "type": EventType.TASK_QUEUED.value,
        "ts": utcnow(),
        "data": queued_event(values, behind),
    }
    row["seq"] = number(connection, {sub.session_id: 1})[sub.session_id]
    connection.execute(insert(_events), [row])
    return task_view(Task(**values)), {sub.session_id: [row]}


def _active_session(connection: Connection, session_id: str, owner: str) -> tuple[bool, list[Any]]:
    """The session's ``parallel_tasks`` and ``history``, locked on PostgreSQL."""
    columns = (_sessions.c.owner, _sessions.c.status, _sessions.c.parallel_tasks, _sessions.c.history)
    query = select(*columns).where(_sessions.c.id == session_id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    found = connection.execute(query).first()
    if found is None or found.owner != owner:
        raise NotFound(f"session {session_id} not found")
    if found.status != SessionStatus.ACTIVE.value:
        raise Conflict(f"session is {found.status}; resume it before submitting tasks", code="bad_state")
    return bool(found.parallel_tasks), list(found.history or [])


def _task_values(sub: Submission, budget: dict[str, Any]) -> dict[str, Any]:
    body = sub.body
    return {
        "id": sub.task_id,
        "session_id": sub.session_id,
        "owner": sub.owner,
        "engine": body.engine,
        "mode": body.mode,
        "prompt": body.prompt,
        "params": sub.params,
        "phase": TaskPhase.QUEUED.value,
        "timeout_s": body.timeout_s,
        "approval_timeout_s": body.approval_timeout_s,
        "on_timeout": body.on_timeout.value,
        "retries": body.retries,
        "retry_backoff_s": body.retry_backoff_s,
        **budget,
        "attempt": 1,
        "acked_rseq": 0,
        "cancel_requested": False,
        "trace_parent": sub.trace_parent,
        "created_at": utcnow(),
    }
