"""The common case of runner ingest, in SQLAlchemy Core: batches of plain events.

Nearly everything a runner sends is a plain event (output, agent messages,
code, cost): stored as is, touching no row but the task's ``acked_rseq`` and
the session's ``last_seq``. A group of such batches, from any number of
runners, is written here in four statements with no ORM unit of work —
select the tasks, number the sessions, insert the events, update the acks —
as one synchronous function (``db.transactions``). Frames that change state
(task start and end, plan, step, approvals, state saves) take the ORM path
in ``ingest``, which owns those rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from cmbtask_protocol import FINAL_EVENT_PHASES, EventType, RunnerEvent, validate_payload
from pydantic import ValidationError
from sqlalchemy import Connection, Table, case, insert, select, update

from ..db.models import Event, Task, utcnow
from ..errors import Conflict, GatewayError, NotFound
from ..store import Numberer, RowWork

__all__ = ["PlainBatch", "check_rseqs", "checked_event", "is_plain", "store_plain"]

_tasks = cast(Table, Task.__table__)
_events = cast(Table, Event.__table__)
#: event types whose storing changes a task or session row besides the counters
_STATEFUL = frozenset(FINAL_EVENT_PHASES) | {
    EventType.TASK_STARTED,
    EventType.PLAN_PROPOSED,
    EventType.STEP_STARTED,
}


@dataclass(frozen=True, slots=True)
class PlainBatch:
    task_id: str
    session_id: str
    frames: Sequence[Any]


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
    ids = sorted({batch.task_id for batch in batches})
    found = connection.execute(
        select(_tasks.c.id, _tasks.c.session_id, _tasks.c.acked_rseq)
        .where(_tasks.c.id.in_(ids))
        .with_for_update()
    )
    acked: dict[str, int] = {}
    owner: dict[str, str] = {}
    for task_id, session_id, acked_rseq in found:
        acked[task_id], owner[task_id] = acked_rseq, session_id
    outcomes: list[int | GatewayError] = []
    drafts: dict[str, list[dict[str, Any]]] = {}
    changed: dict[str, int] = {}
    for batch in batches:
        try:
            outcomes.append(_draft(batch, acked, owner, drafts, changed))
        except GatewayError as error:
            outcomes.append(error)
    if drafts:
        _insert(connection, number, drafts)
    if changed:
        connection.execute(
            update(_tasks)
            .where(_tasks.c.id.in_(sorted(changed)))
            .values(acked_rseq=case(changed, value=_tasks.c.id, else_=_tasks.c.acked_rseq))
        )
    return outcomes, drafts


def _draft(
    batch: PlainBatch,
    acked: dict[str, int],
    owner: dict[str, str],
    drafts: dict[str, list[dict[str, Any]]],
    changed: dict[str, int],
) -> int:
    """Turn one batch into event rows (without seqs); returns the task's new ack."""
    if owner.get(batch.task_id) != batch.session_id:
        raise NotFound("task not found")
    last = acked[batch.task_id]
    check_rseqs(last, batch.frames)
    rows: list[dict[str, Any]] = []
    for frame in batch.frames:
        if frame.rseq <= last:
            continue
        type_, data = checked_event(frame)
        rows.append(
            {
                "session_id": batch.session_id,
                "task_id": batch.task_id,
                "rseq": frame.rseq,
                "type": type_,
                "ts": frame.ts or utcnow(),
                "data": data,
            }
        )
        last = frame.rseq
    if rows:
        drafts.setdefault(batch.session_id, []).extend(rows)
    if last != acked[batch.task_id]:
        acked[batch.task_id] = changed[batch.task_id] = last
    return last


def _insert(connection: Connection, number: Numberer, drafts: dict[str, list[dict[str, Any]]]) -> None:
    last_seqs = number(connection, {session_id: len(rows) for session_id, rows in drafts.items()})
    everything: list[dict[str, Any]] = []
    for session_id, rows in drafts.items():
        if session_id not in last_seqs:
            raise NotFound("session not found")
        first = last_seqs[session_id] - len(rows) + 1
        for index, row in enumerate(rows):
            row["seq"] = first + index
        everything.extend(rows)
    connection.execute(insert(_events), everything)
