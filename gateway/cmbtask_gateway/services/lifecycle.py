"""The task lifecycle: the one place a task's phase changes.

    queued → starting → running ⇄ waiting_approval → succeeded | failed | cancelled | timed_out

Every change goes through this module inside an ``EventStore.write`` (or
``write_group``) transaction, together with the event that announces it, so
the stored phase and the event log never disagree. A change the graph does
not allow is refused and logged as an error; nothing is applied or emitted.
Three moves that every task makes, many at once when a wave of tasks starts,
are written in SQLAlchemy Core instead, on the same edges and with the same
events: a submit (``queued``, ``services.submits``), a dispatcher's claim
(``queued → starting``, ``services.starts``) and a runner's ``task.started``
(``→ running``, ``services.ingest_plain``).
Two shortcuts are edges of their own: a task whose runner someone else
started (executor ``none``) goes from ``queued`` straight to ``running``, and
any unfinished task may end.

How a task ends whose runner was stopped without a result of its own (it
died, or a signal stopped it before any cancel reached it) is decided here as
well, from what the gateway recorded: as the cancel it asked for, or failed;
or, when its runner died and it has retries left, it goes back to ``queued``
for its next attempt (``running → queued`` is that edge, announced by
``task.retrying``), due after its backoff (``cmbtask_protocol.retries``).

Which queued task may start is decided here too: a session runs its tasks
one at a time, in submission order (the oldest unfinished task of a session
is the only one that may start), unless the session allows parallel tasks.
A task waiting out a retry's backoff is unfinished: the tasks behind it wait.
The rule is a query on stored rows, so it holds across gateway restarts and
between replicas.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cmbtask_protocol import (
    ACTIVE_TASK_PHASES,
    CANCEL_TIMEOUT,
    FINAL_TASK_PHASES,
    ApprovalStatus,
    EventType,
    TaskPhase,
    retry_delay_s,
)
from sqlalchemy import ColumnElement, Connection, and_, exists, func, not_, or_, select
from sqlalchemy.orm import aliased

from ..db.models import Approval, Session, Task, utcnow
from ..logs import get_logger
from ..store import WriteTx

__all__ = [
    "EDGES",
    "FINAL_EVENT",
    "UNFINISHED",
    "allowed",
    "approval_closed",
    "approval_opened",
    "ending_when_stopped",
    "finish",
    "finish_died",
    "mark_running",
    "may_start",
    "move",
    "queued_event",
    "retry",
    "runner_ended",
    "runner_ending",
    "waiting_behind",
]

log = get_logger(__name__)

_ENDS = frozenset(FINAL_TASK_PHASES)
#: back to the queue for another attempt: its runner died (see ``retry``)
_RETRY = frozenset({TaskPhase.QUEUED})

#: Every legal change of phase. A phase maps to the phases it may become.
EDGES: Final[Mapping[TaskPhase, frozenset[TaskPhase]]] = {
    TaskPhase.QUEUED: frozenset({TaskPhase.STARTING, TaskPhase.RUNNING}) | _ENDS,
    TaskPhase.STARTING: frozenset({TaskPhase.RUNNING, TaskPhase.WAITING_APPROVAL}) | _ENDS | _RETRY,
    TaskPhase.RUNNING: frozenset({TaskPhase.WAITING_APPROVAL}) | _ENDS | _RETRY,
    TaskPhase.WAITING_APPROVAL: frozenset({TaskPhase.RUNNING}) | _ENDS | _RETRY,
    **{phase: frozenset() for phase in FINAL_TASK_PHASES},
}

#: The event that announces each final phase.
FINAL_EVENT: Final[Mapping[TaskPhase, str]] = {
    TaskPhase.SUCCEEDED: EventType.TASK_SUCCEEDED,
    TaskPhase.FAILED: EventType.TASK_FAILED,
    TaskPhase.CANCELLED: EventType.TASK_CANCELLED,
    TaskPhase.TIMED_OUT: EventType.TASK_TIMED_OUT,
}

UNFINISHED: Final = sorted(phase.value for phase in TaskPhase if not phase.is_final)


def allowed(source: TaskPhase, target: TaskPhase) -> bool:
    return target in EDGES[source]


def move(task: Task, session: Session | None, target: TaskPhase) -> bool:
    """Apply one edge of the graph to ``task`` (and its session's phase).

    The named steps below are what services call; each is one of these."""
    source = TaskPhase(task.phase)
    if not allowed(source, target):
        log.error(
            "task.illegal_transition",
            task_id=task.id,
            session_id=task.session_id,
            source=source.value,
            target=target.value,
        )
        return False
    task.phase = target.value
    if target is TaskPhase.RUNNING and task.started_at is None:
        task.started_at = utcnow()
    if target.is_final:
        task.finished_at = utcnow()
    if session is not None:
        session.phase = target.value
    return True


def queued_event(task: Mapping[str, Any], behind: str | None) -> dict[str, Any]:
    """The data of a new task's ``task.queued`` (its row's values as ``task``),
    naming the task it waits ``behind``, whose phase the session keeps showing;
    the session's phase becomes ``queued`` only when it waits behind none."""
    data: dict[str, Any] = {"engine": task["engine"], "mode": task["mode"], "prompt": task["prompt"]}
    if behind is not None:
        data["behind"] = behind
    # the budget it runs under (its own, or its owner's defaults), for every client to show
    for limit in ("max_cost_usd", "max_tokens"):
        if (value := task.get(limit)) is not None:
            data[limit] = value
    return data


def mark_running(
    tx: WriteTx, task: Task, session: Session, data: dict[str, Any], rseq: int, ts: datetime | None
) -> None:
    """The runner's ``task.started``: stored as sent, with the number of the
    attempt (the gateway's count, whatever the runner thinks), and the task runs."""
    data = {**data, "attempt": task.attempt}
    tx.emit(EventType.TASK_STARTED, data, task_id=task.id, rseq=rseq, ts=ts)
    if task.phase in {TaskPhase.QUEUED.value, TaskPhase.STARTING.value}:
        move(task, session, TaskPhase.RUNNING)


def approval_opened(task: Task, session: Session | None) -> None:
    """A runner asked for an approval: the task waits (if it was under way)."""
    if task.phase in {TaskPhase.RUNNING.value, TaskPhase.STARTING.value}:
        move(task, session, TaskPhase.WAITING_APPROVAL)


async def approval_closed(tx: WriteTx, task_id: str) -> None:
    """An approval was decided or expired: back to ``running`` once none is pending."""
    task = await tx.db.get(Task, task_id, with_for_update=True)
    if task is None or task.phase != TaskPhase.WAITING_APPROVAL.value:
        return
    still_pending = await tx.db.scalar(
        select(func.count())
        .select_from(Approval)
        .where(Approval.task_id == task_id, Approval.status == ApprovalStatus.PENDING.value)
    )
    if not still_pending:
        move(task, await tx.db.get(Session, task.session_id), TaskPhase.RUNNING)


def ending_when_stopped(task: Task) -> tuple[TaskPhase, str | None]:
    """The phase (and reason) of a task whose runner stopped without a result.

    A stop the gateway asked for is recorded (``cancel_requested``) before
    any executor stops the runner, so it ends as asked: ``timed_out`` or
    ``cancelled``. Any other stop (a pod deleted, a node drained, a process
    killed from outside) is a failure; its reason is the caller's."""
    if not task.cancel_requested:
        return TaskPhase.FAILED, None
    if task.cancel_reason == CANCEL_TIMEOUT:
        return TaskPhase.TIMED_OUT, "timed out"
    return TaskPhase.CANCELLED, task.cancel_reason or "cancelled"


def runner_ending(task: Task, phase: TaskPhase, data: dict[str, Any]) -> tuple[TaskPhase, dict[str, Any]]:
    """The phase a runner's final event ends ``task`` in, with its payload.

    A runner that a signal stopped before any cancel reached it reports
    ``task.failed`` naming the ``signal``; if the gateway had asked for a
    cancel (its frame lost or overtaken by the executor's SIGTERM), the task
    ends as that cancel says."""
    if not data.get("signal"):
        return phase, data
    stopped, reason = ending_when_stopped(task)
    if reason is None:
        return phase, data
    return stopped, {**data, "reason": reason}


async def finish(
    tx: WriteTx,
    task: Task,
    phase: TaskPhase,
    *,
    reason: str,
    exit_code: int | None = None,
    data: dict[str, Any] | None = None,
    rseq: int | None = None,
    ts: datetime | None = None,
) -> bool:
    """End ``task`` in ``phase``: its final event (the runner's own ``data``
    and ``rseq``/``ts`` when it sent one), pending approvals cancelled, the
    session's history appended. False when the task had already ended: the
    first final event stands (a runner and the watchdog may race to it)."""
    if TaskPhase(task.phase).is_final:
        log.info("task.already_final", task_id=task.id, phase=task.phase, ignored=phase.value)
        return False
    session = await tx.db.get(Session, task.session_id)
    if not move(task, session, phase):
        return False
    task.reason = reason or None
    task.exit_code = exit_code
    if data is None:
        data = {"reason": reason}
        if exit_code is not None:
            data["exit_code"] = exit_code
    tx.emit(FINAL_EVENT[phase], data, task_id=task.id, rseq=rseq, ts=ts)
    await _cancel_pending_approvals(tx, task, f"task {phase.value}")
    _add_history(session, task, phase=phase.value, reason=reason)
    return True


async def _cancel_pending_approvals(tx: WriteTx, task: Task, reason: str) -> None:
    """A runner that is gone can no longer act on a decision: its approvals end."""
    pending = await tx.db.scalars(
        select(Approval).where(Approval.task_id == task.id, Approval.status == ApprovalStatus.PENDING.value)
    )
    for approval in pending:
        approval.status = ApprovalStatus.CANCELLED.value
        approval.resolved_at = utcnow()
        tx.emit(EventType.APPROVAL_CANCELLED, {"approval_id": approval.id, "reason": reason}, task_id=task.id)


def _add_history(session: Session | None, task: Task, **fields: Any) -> None:
    if session is not None:
        entry = {"ts": datetime.now(UTC).isoformat(), "task_id": task.id, "role": "task", **fields}
        session.history = [*(session.history or []), entry]


async def retry(
    tx: WriteTx,
    task: Task,
    *,
    reason: str,
    exit_code: int | None = None,
    signal: str | None = None,
    rseq: int | None = None,
) -> bool:
    """``task``'s runner died: queue it for its next attempt, due after its
    backoff, if it has retries left and nobody asked it to stop. Announced by
    ``task.retrying`` (the dead runner's final frame's ``rseq``, when it sent
    one). False, changing nothing, when it may not be retried."""
    if task.cancel_requested or task.attempt > task.retries:
        return False
    if TaskPhase(task.phase) not in ACTIVE_TASK_PHASES:
        return False
    session = await tx.db.get(Session, task.session_id)
    if not move(task, session, TaskPhase.QUEUED):
        return False
    task.attempt += 1
    delay_s = retry_delay_s(task.retry_backoff_s, task.attempt)
    task.retry_at = utcnow() + timedelta(seconds=delay_s)
    # The next attempt is a new runner: its own handle, and its timeout counts from its own start.
    task.handle, task.started_at = None, None
    task.reason, task.exit_code = reason, exit_code
    data: dict[str, Any] = {
        "attempt": task.attempt,
        "retries": task.retries,
        "reason": reason,
        "delay_s": delay_s,
        "retry_at": task.retry_at.isoformat(),
    }
    data.update({k: v for k, v in (("exit_code", exit_code), ("signal", signal)) if v is not None})
    tx.emit(EventType.TASK_RETRYING, data, task_id=task.id, rseq=rseq)
    await _cancel_pending_approvals(tx, task, "task retrying")
    _add_history(session, task, phase="retrying", reason=reason, attempt=task.attempt)
    log.warning("task.retrying", task_id=task.id, attempt=task.attempt, delay_s=delay_s, reason=reason)
    return True


async def finish_died(
    tx: WriteTx,
    task: Task,
    *,
    reason: str,
    exit_code: int | None = None,
    data: dict[str, Any] | None = None,
    rseq: int | None = None,
    ts: datetime | None = None,
) -> bool:
    """``task``'s runner died (``cmbtask_protocol.runner_died``): retried when it
    may be, else failed, saying so when its retries ran out."""
    signal = (data or {}).get("signal")
    if await retry(tx, task, reason=reason, exit_code=exit_code, signal=signal, rseq=rseq):
        return True
    if task.retries and task.attempt > task.retries and not task.cancel_requested:
        reason = f"{reason} (attempt {task.attempt} of {task.retries + 1}: no retries left)"
        data = None if data is None else {**data, "reason": reason}
    return await finish(
        tx, task, TaskPhase.FAILED, reason=reason, exit_code=exit_code, data=data, rseq=rseq, ts=ts
    )


async def runner_ended(
    tx: WriteTx, task: Task, phase: TaskPhase, data: dict[str, Any], rseq: int, ts: datetime | None
) -> bool:
    """A runner's final event: the task ends as ``runner_ending`` says, unless a
    signal that nobody asked for stopped the runner (it died: ``finish_died``)."""
    phase, data = runner_ending(task, phase, data)
    reason, exit_code = str(data.get("reason", "")), data.get("exit_code")
    if phase is TaskPhase.FAILED and data.get("signal"):
        return await finish_died(tx, task, reason=reason, exit_code=exit_code, data=data, rseq=rseq, ts=ts)
    return await finish(tx, task, phase, reason=reason, exit_code=exit_code, data=data, rseq=rseq, ts=ts)


def _ahead_of(task: type[Task] | Any) -> ColumnElement[bool]:
    """An unfinished task of the same session submitted before ``task``."""
    earlier = aliased(Task)
    return exists().where(
        earlier.session_id == task.session_id,
        earlier.phase.in_(UNFINISHED),
        earlier.id != task.id,
        or_(
            earlier.created_at < task.created_at,
            and_(earlier.created_at == task.created_at, earlier.id < task.id),
        ),
    )


def may_start(now: datetime) -> ColumnElement[bool]:
    """Where-clause over ``Task`` joined with its ``Session``: queued, past any
    retry's backoff, and first in line (or in a session that allows parallel tasks)."""
    return and_(
        Task.phase == TaskPhase.QUEUED.value,
        or_(Task.retry_at.is_(None), Task.retry_at <= now),
        or_(Session.parallel_tasks.is_(True), not_(_ahead_of(Task))),
    )


def waiting_behind(connection: Connection, session_id: str, parallel_tasks: bool) -> str | None:
    """The task a new task of the session waits behind: its latest unfinished one."""
    if parallel_tasks:
        return None
    return connection.scalar(
        select(Task.id)
        .where(Task.session_id == session_id, Task.phase.in_(UNFINISHED))
        .order_by(Task.created_at.desc(), Task.id.desc())
        .limit(1)
    )
