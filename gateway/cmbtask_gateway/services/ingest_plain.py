"""The common case of runner ingest, past the ORM: batches of events.

Nearly everything a runner sends is a plain event (output, agent messages,
code, cost): stored as is, touching no row but the task's ``acked_rseq`` and
the session's ``last_seq``. A group of such batches, from any number of
runners, is written here with no ORM unit of work — select the tasks, number
the sessions, insert the events, update the acks — as one synchronous function
(``db.transactions``): on SQLite the stdlib driver's cached statements, on
PostgreSQL three fixed statements that asyncpg prepares once per connection,
the rows bound as arrays (the insert and the acks are one statement).

Three events that change a row in one simple way are stored here too, with
the same effect as ``ingest``'s ORM path: ``task.started`` (the task runs,
see ``lifecycle.mark_running``), ``step.started`` and ``plan.proposed`` (the
session's step and plan). They are what a wave of starting tasks sends first,
and each one in a group used to send the whole group down the ORM path. The
frames left to ``ingest`` — a task's end, approvals, state saves — carry the
rules (budgets, retries, versions) that belong there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from cmbtask_protocol import FINAL_EVENT_PHASES, EventType, RunnerEvent, TaskPhase, validate_payload
from pydantic import ValidationError
from sqlalchemy import Connection, Table, bindparam, func, literal, update

from ..db.models import Event, Session, Task, utcnow
from ..errors import Conflict, GatewayError, NotFound
from ..store import Numberer, RowWork, raw_cursor

__all__ = ["PlainBatch", "check_rseqs", "checked_event", "is_plain", "store_plain"]

_tasks = cast(Table, Task.__table__)
_sessions = cast(Table, Session.__table__)
_events = cast(Table, Event.__table__)
#: event types whose storing follows rules of ``ingest``'s ORM path
_STATEFUL = frozenset(FINAL_EVENT_PHASES)
#: phases a ``task.started`` moves to ``running`` (``lifecycle.mark_running``)
_NOT_YET_RUNNING = (TaskPhase.QUEUED.value, TaskPhase.STARTING.value)


@dataclass(frozen=True, slots=True)
class PlainBatch:
    task_id: str
    session_id: str
    frames: Sequence[Any]


@dataclass(slots=True)
class _Effects:
    """What the stored events change besides the counters, applied after them."""

    started: list[str] = field(default_factory=list)  # task ids
    steps: dict[str, int] = field(default_factory=dict)  # session id -> step
    plans: dict[str, Any] = field(default_factory=dict)  # session id -> steps

    def note(self, row: dict[str, Any], attempt: int) -> None:
        type_, data = row["type"], row["data"]
        if type_ == EventType.TASK_STARTED:
            # the gateway's count of attempts, whatever the runner thinks
            row["data"] = {**data, "attempt": attempt}
            self.started.append(row["task_id"])
        elif type_ == EventType.STEP_STARTED:
            self.steps[row["session_id"]] = data["step"]
        elif type_ == EventType.PLAN_PROPOSED:
            self.plans[row["session_id"]] = data.get("steps")

    def apply(self, connection: Connection) -> None:
        if self.started:
            started_at = _tasks.c.started_at  # a retry keeps its first start (``lifecycle.move``)
            now = literal(utcnow(), started_at.type)
            moved = connection.scalars(
                update(_tasks)
                .where(_tasks.c.id.in_(sorted(set(self.started))), _tasks.c.phase.in_(_NOT_YET_RUNNING))
                .values(phase=TaskPhase.RUNNING.value, started_at=func.coalesce(started_at, now))
                .returning(_tasks.c.session_id)
            ).all()
            if moved:
                sessions = sorted(set(moved))
                connection.execute(
                    update(_sessions)
                    .where(_sessions.c.id.in_(sessions))
                    .values(phase=TaskPhase.RUNNING.value)
                )
        for column, values in (("step", self.steps), ("plan", self.plans)):
            if values:
                connection.execute(
                    update(_sessions)
                    .where(_sessions.c.id == bindparam("session_id"))
                    .values({column: bindparam("new_value")}),
                    [{"session_id": key, "new_value": value} for key, value in values.items()],
                )


def is_plain(frames: Sequence[Any]) -> bool:
    return all(isinstance(frame, RunnerEvent) and frame.event_type not in _STATEFUL for frame in frames)


def check_rseqs(acked_rseq: int, frames: Sequence[Any]) -> None:
    """Frames at or below the ack are resends (skipped); above it they must follow on."""
    expected = acked_rseq + 1
    for frame in frames:
        if frame.rseq < expected:
            continue
        if frame.rseq != expected:
            raise Conflict(f"rseq {frame.rseq} skips {expected}: resend from there", code="rseq_gap")
        expected += 1


def checked_event(frame: RunnerEvent) -> tuple[str, dict[str, Any]]:
    """The event to store for ``frame``: its payload in normal form, or an
    ``error`` event saying why the runner's payload was refused."""
    try:
        return frame.event_type, validate_payload(frame.event_type, frame.data)
    except ValidationError as error:
        message = f"runner sent an invalid {frame.event_type!r} event: " + "; ".join(
            e["msg"] for e in error.errors()
        )
        return EventType.ERROR, {"code": "invalid_event", "message": message}


def store_plain(
    connection: Connection, number: Numberer, batches: Sequence[PlainBatch]
) -> RowWork[list[int | GatewayError]]:
    """Store ``batches``; per batch the task's new ack, or why it was refused.

    Raises (rolling everything back) only for what no single batch explains,
    such as a session deleted under its runner; the caller then retries the
    batches one by one.
    """
    sql = _SqliteStatements(connection) if connection.dialect.name == "sqlite" else _PgStatements(connection)
    found = sql.tasks(sorted({batch.task_id for batch in batches}))
    known: dict[str, _Known] = {}
    for task_id, session_id, acked_rseq, attempt in found:
        known[task_id] = _Known(session_id, acked_rseq, attempt)
    outcomes: list[int | GatewayError] = []
    drafts: dict[str, list[dict[str, Any]]] = {}
    changed: dict[str, int] = {}
    effects = _Effects()
    for batch in batches:
        try:
            outcomes.append(_draft(batch, known, drafts, changed, effects))
        except GatewayError as error:
            outcomes.append(error)
    if drafts:  # a new ack always comes with new rows
        sql.store(_numbered(connection, number, drafts), changed)
    effects.apply(connection)
    return outcomes, drafts


@dataclass(slots=True)
class _Known:
    session_id: str
    acked_rseq: int
    attempt: int


def _draft(
    batch: PlainBatch,
    known: dict[str, _Known],
    drafts: dict[str, list[dict[str, Any]]],
    changed: dict[str, int],
    effects: _Effects,
) -> int:
    """Turn one batch into event rows (without seqs); returns the task's new ack."""
    task = known.get(batch.task_id)
    if task is None or task.session_id != batch.session_id:
        raise NotFound("task not found")
    last = task.acked_rseq
    check_rseqs(last, batch.frames)
    rows: list[dict[str, Any]] = []
    for frame in batch.frames:
        if frame.rseq <= last:
            continue
        type_, data = checked_event(frame)
        row = {
            "session_id": batch.session_id,
            "task_id": batch.task_id,
            "rseq": frame.rseq,
            "type": type_,
            "ts": frame.ts or utcnow(),
            "data": data,
        }
        effects.note(row, task.attempt)  # a refused payload is an ``error`` row: no effect
        rows.append(row)
        last = frame.rseq
    if rows:
        drafts.setdefault(batch.session_id, []).extend(rows)
    if last != task.acked_rseq:
        task.acked_rseq = changed[batch.task_id] = last
    return last


def _numbered(
    connection: Connection, number: Numberer, drafts: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Give every drafted row its seq; all rows, in the order to insert them."""
    last_seqs = number(connection, {session_id: len(rows) for session_id, rows in drafts.items()})
    everything: list[dict[str, Any]] = []
    for session_id, rows in drafts.items():
        if session_id not in last_seqs:
            raise NotFound("session not found")
        first = last_seqs[session_id] - len(rows) + 1
        for index, row in enumerate(rows):
            row["seq"] = first + index
        everything.extend(rows)
    return everything


class _PgStatements:
    """The statements on PostgreSQL: fixed text, so asyncpg prepares each once
    per connection, with the rows as arrays (``unnest``), one round trip each
    whatever the group's size. Compiling the Core statements (an ``IN``
    list, a ``CASE``, a multi-row ``VALUES``) took more of the gateway's CPU
    than the round trips."""

    _TASKS = (
        "SELECT id, session_id, acked_rseq, attempt FROM tasks"
        " WHERE id = ANY($1::varchar[]) ORDER BY id FOR UPDATE"
    )
    # The acks ride in the same statement (a data-modifying CTE always runs);
    # ``data`` travels as text and is cast: it is already JSON text.
    _INSERT_AND_ACK = (
        "WITH acks AS (UPDATE tasks AS t SET acked_rseq = a.ack"
        " FROM unnest($8::varchar[], $9::int[]) AS a(id, ack) WHERE t.id = a.id)"
        " INSERT INTO events (session_id, seq, task_id, rseq, type, ts, data)"
        " SELECT s, q, t, r, y, ts, d::json FROM unnest($1::varchar[], $2::int[], $3::varchar[],"
        " $4::int[], $5::varchar[], $6::timestamptz[], $7::text[]) AS u(s, q, t, r, y, ts, d)"
    )

    def __init__(self, connection: Connection) -> None:
        self._cursor = raw_cursor(connection)
        self._ts = _bind(_events.c.ts, connection)
        self._data = _bind(_events.c.data, connection)

    def tasks(self, ids: list[str]) -> Iterable[tuple[str, str, int, int]]:
        self._cursor.execute(self._TASKS, (ids,))
        return cast(list[tuple[str, str, int, int]], self._cursor.fetchall())

    def store(self, rows: list[dict[str, Any]], acks: dict[str, int]) -> None:
        """Insert ``rows`` and set the tasks' new ``acks``."""
        ts, data = self._ts, self._data
        self._cursor.execute(
            self._INSERT_AND_ACK,
            (
                [row["session_id"] for row in rows],
                [row["seq"] for row in rows],
                [row["task_id"] for row in rows],
                [row["rseq"] for row in rows],
                [row["type"] for row in rows],
                [ts(row["ts"]) for row in rows],
                [data(row["data"]) for row in rows],
                list(acks),
                list(acks.values()),
            ),
        )


class _SqliteStatements:
    """The same statements on the stdlib driver, each a cached prepared
    statement: on SQLite, SQLAlchemy's compiling of ``IN`` lists and its
    execution context cost more than the statements themselves. Values are
    bound through the columns' own types, so rows read back as the ORM's."""

    def __init__(self, connection: Connection) -> None:
        self._cursor = raw_cursor(connection)
        self._ts = _bind(_events.c.ts, connection)
        self._data = _bind(_events.c.data, connection)

    def tasks(self, ids: list[str]) -> Iterable[tuple[str, str, int, int]]:
        query = "SELECT id, session_id, acked_rseq, attempt FROM tasks WHERE id = ?"
        return [row for task_id in ids for row in self._cursor.execute(query, (task_id,)).fetchall()]

    def store(self, rows: list[dict[str, Any]], acks: dict[str, int]) -> None:
        """Insert ``rows`` and set the tasks' new ``acks``."""
        self._cursor.executemany(
            "INSERT INTO events (session_id, seq, task_id, rseq, type, ts, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    row["session_id"],
                    row["seq"],
                    row["task_id"],
                    row["rseq"],
                    row["type"],
                    self._ts(row["ts"]),
                    self._data(row["data"]),
                )
                for row in rows
            ],
        )
        self._cursor.executemany(
            "UPDATE tasks SET acked_rseq = ? WHERE id = ?", [(ack, task_id) for task_id, ack in acks.items()]
        )


def _bind(column: Any, connection: Connection) -> Callable[[Any], Any]:
    processor = column.type.bind_processor(connection.dialect)
    return processor if processor is not None else (lambda value: value)
