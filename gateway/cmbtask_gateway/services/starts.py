"""The dispatcher's writes for a wave of starts, in SQLAlchemy Core.

When many tasks are submitted at once, the dispatcher finds them startable
together. Marking each ``starting`` through the ORM took a transaction of five
statements per task, every one a hop to the database thread, queued behind the
runners' event groups on the one writer: the last of 50 tasks had its process
seconds after the first. Here a whole wave is two transactions — one claims
every startable task (``queued → starting``), one records every handle — as
synchronous functions for ``EventStore.write_rows``. Neither emits an event:
a task's start is announced by its runner's ``task.started``.

On PostgreSQL the claim locks the rows it takes and skips rows another
replica's dispatcher holds (``FOR UPDATE SKIP LOCKED``), so each task is
started by one dispatcher; the phase is checked again in the ``UPDATE``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from cmbtask_protocol import TaskPhase
from sqlalchemy import Connection, Select, Table, bindparam, select, update

from ..db.models import Session, Task
from ..store import Numberer, RowWork
from . import lifecycle

__all__ = ["Startable", "any_startable", "claim_startable", "record_handles"]

_tasks = cast(Table, Task.__table__)
_sessions = cast(Table, Session.__table__)
_QUEUED = TaskPhase.QUEUED.value
_STARTING = TaskPhase.STARTING.value


@dataclass(frozen=True, slots=True)
class Startable:
    """What launching a claimed task needs to know of it."""

    id: str
    session_id: str
    owner: str
    engine: str
    mode: str
    timeout_s: float | None
    attempt: int
    params: dict[str, Any]
    trace_parent: str | None


_COLUMNS = (
    Task.id,
    Task.session_id,
    Task.owner,
    Task.engine,
    Task.mode,
    Task.timeout_s,
    Task.attempt,
    Task.params,
    Task.trace_parent,
)


def _startable(now: datetime) -> Select[Any]:
    return (
        select(*_COLUMNS)
        .join(Session, Session.id == Task.session_id)
        .where(lifecycle.may_start(now))
        .order_by(Task.created_at, Task.id)
    )


def any_startable(connection: Connection, *, now: datetime) -> bool:
    """Whether a claim would find a task: the dispatcher wakes on every change,
    and most wakes have nothing to start, which needs no write transaction."""
    return connection.execute(_startable(now).limit(1)).first() is not None


def claim_startable(
    connection: Connection, _number: Numberer, *, limit: int, executor: str, now: datetime
) -> RowWork[list[Startable]]:
    """Move up to ``limit`` startable tasks (oldest first) to ``starting``."""
    query = _startable(now).limit(limit)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(of=_tasks, skip_locked=True)
    found = [Startable(*row) for row in connection.execute(query)]
    if not found:
        return [], {}
    claimed = set(
        connection.scalars(
            update(_tasks)
            .where(_tasks.c.id.in_([task.id for task in found]), _tasks.c.phase == _QUEUED)
            .values(phase=_STARTING, executor=executor)
            .returning(_tasks.c.id)
        )
    )
    started = [task for task in found if task.id in claimed]
    # the session shows its latest task's phase (``lifecycle.move``)
    sessions = sorted({task.session_id for task in started})
    if sessions:
        connection.execute(update(_sessions).where(_sessions.c.id.in_(sessions)).values(phase=_STARTING))
    return started, {}


def record_handles(connection: Connection, _number: Numberer, *, handles: Mapping[str, str]) -> RowWork[None]:
    """Store each launched task's executor handle (task id → handle)."""
    if handles:
        connection.execute(
            update(_tasks).where(_tasks.c.id == bindparam("task_id")).values(handle=bindparam("new_handle")),
            [{"task_id": task_id, "new_handle": handle} for task_id, handle in handles.items()],
        )
    return None, {}
