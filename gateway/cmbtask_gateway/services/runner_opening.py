"""What a runner's socket reads to open, in SQLAlchemy Core.

Every task of a wave opens its runner socket within the same second or two:
the task looked up before the hello, and the welcome (the task's spec, its
ack point and the session's saved state) after it. Each is one statement on
the read path of ``db.transactions`` (on SQLite its own thread and
connection, beside the writer) instead of two or three ORM loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from cmbtask_protocol import OnTimeout, RunnerWelcome, TaskPhase, TaskSpec
from sqlalchemy import Connection, Table, select

from ..db.models import Session, Task
from ..errors import Conflict, NotFound

__all__ = ["TaskHead", "read_task_head", "read_welcome"]

_tasks = cast(Table, Task.__table__)
_sessions = cast(Table, Session.__table__)


@dataclass(frozen=True, slots=True)
class TaskHead:
    id: str
    session_id: str
    phase: str
    trace_parent: str | None


def read_task_head(connection: Connection, task_id: str) -> TaskHead | None:
    columns = (_tasks.c.id, _tasks.c.session_id, _tasks.c.phase, _tasks.c.trace_parent)
    row = connection.execute(select(*columns).where(_tasks.c.id == task_id)).first()
    return None if row is None else TaskHead(*row)


_WELCOME = (
    _tasks.c.id,
    _tasks.c.session_id,
    _tasks.c.engine,
    _tasks.c.mode,
    _tasks.c.prompt,
    _tasks.c.params,
    _tasks.c.timeout_s,
    _tasks.c.approval_timeout_s,
    _tasks.c.on_timeout,
    _tasks.c.max_cost_usd,
    _tasks.c.max_tokens,
    _tasks.c.prices,
    _tasks.c.attempt,
    _tasks.c.phase,
    _tasks.c.acked_rseq,
    _tasks.c.cancel_requested,
    _sessions.c.state,
    _sessions.c.state_version,
)


def read_welcome(connection: Connection, task_id: str, session_id: str) -> RunnerWelcome:
    """The welcome for ``task_id``'s runner; NotFound or Conflict (it ended)."""
    query = (
        select(*_WELCOME)
        .join_from(_tasks, _sessions, _sessions.c.id == _tasks.c.session_id)
        .where(_tasks.c.id == task_id, _sessions.c.id == session_id)
    )
    row = connection.execute(query).mappings().first()
    if row is None:
        raise NotFound("task not found")
    if TaskPhase(row["phase"]).is_final:
        raise Conflict(f"task already finished ({row['phase']})", code="already_finished")
    spec = TaskSpec(
        id=row["id"],
        session_id=row["session_id"],
        engine=row["engine"],
        mode=row["mode"],
        prompt=row["prompt"],
        params=row["params"] or {},
        timeout_s=row["timeout_s"],
        approval_timeout_s=row["approval_timeout_s"],
        on_timeout=OnTimeout(row["on_timeout"]),
        max_cost_usd=row["max_cost_usd"],
        max_tokens=row["max_tokens"],
        prices=row["prices"] or {},
        attempt=row["attempt"],
    )
    return RunnerWelcome(
        task=spec,
        acked_rseq=row["acked_rseq"],
        state=row["state"],
        state_version=row["state_version"],
        cancel_requested=row["cancel_requested"],
    )
