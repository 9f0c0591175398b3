"""What a runner says, stored exactly once.

Frames arrive in ``rseq`` order on one socket. A batch of them is applied in
one transaction together with the task's ``acked_rseq``, so after any crash
the stored events and the ack point agree: a resent frame at or below
``acked_rseq`` is recognised and skipped, never stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from cmbtask_protocol import (
    FINAL_EVENT_PHASES,
    ApprovalStatus,
    EventType,
    OnTimeout,
    RunnerApprovalRequest,
    RunnerEvent,
    RunnerStateResult,
    RunnerStateSave,
    RunnerWelcome,
    validate_payload,
)
from opentelemetry.context import Context
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .. import tracing
from ..db.models import Approval, Session, Task, utcnow
from ..errors import GatewayError, NotFound
from ..logs import get_logger
from ..store import EventStore, WriteGroup, WriteTx
from . import lifecycle
from .ingest_plain import PlainBatch, check_rseqs, checked_event, is_plain, store_plain
from .runner_opening import TaskHead, read_task_head, read_welcome

__all__ = ["IngestResult", "RunnerFrame", "RunnerIngest"]

log = get_logger(__name__)

RunnerFrame = RunnerEvent | RunnerApprovalRequest | RunnerStateSave


@dataclass(frozen=True, slots=True)
class _Pending:
    task_id: str
    session_id: str
    frames: list[RunnerFrame]
    future: asyncio.Future[IngestResult]
    #: the task's trace (``tracing.context_of``), while the gateway traces
    trace: Context | None = None


class IngestResult:
    def __init__(self, acked_rseq: int) -> None:
        self.acked_rseq = acked_rseq
        self.replies: list[RunnerStateResult] = []
        self.finished = False


class RunnerIngest:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: EventStore,
        approval_timeout_s: float,
        wake_dispatcher: Callable[[], None],
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._approval_timeout_s = approval_timeout_s
        self._wake = wake_dispatcher
        self._queue: list[_Pending] = []
        self._queued = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def welcome(self, task_id: str, session_id: str) -> RunnerWelcome:
        return await self._store.read_rows(partial(read_welcome, task_id=task_id, session_id=session_id))

    async def task_head(self, task_id: str) -> TaskHead | None:
        """The task a runner socket names, looked up before its hello."""
        return await self._store.read_rows(partial(read_task_head, task_id=task_id))

    async def apply(
        self, task_id: str, session_id: str, frames: list[RunnerFrame], *, trace: Context | None = None
    ) -> IngestResult:
        """Store ``frames`` (group-committed with other runners' frames)."""
        future = asyncio.get_running_loop().create_future()
        pending = _Pending(task_id, session_id, frames, future, trace)
        self._queue.append(pending)
        self._queued.set()
        if self._writer is None or self._writer.done():
            # A fresh context: the writer serves every runner, so it must not
            # carry the log context (task_id, …) of the one that started it.
            self._writer = asyncio.create_task(
                self._write_loop(), name="runner-ingest", context=contextvars.Context()
            )
        return await pending.future

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _write_loop(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            group, self._queue = self._queue, []
            if not group:
                continue
            # One span per group, never per frame: off, this is one None check.
            traces = [item.trace for item in group] if tracing.enabled() else []
            with tracing.group_span("ingest.commit", traces, (item.task_id for item in group)) as span:
                if span is not None:
                    span.set_attribute("cmbtask.frames", sum(len(item.frames) for item in group))
                await self._write_group(group)

    async def _write_group(self, group: list[_Pending]) -> None:
        plain = [item for item in group if is_plain(item.frames)]
        # Split only while each task is in the group once: two batches of one
        # task (a runner and its replaced connection) keep their order.
        if plain and len({item.task_id for item in group}) == len(group) and await self._write_plain(plain):
            group = [item for item in group if not is_plain(item.frames)]
            if not group:
                return
        await self._write_orm(group)

    async def _write_orm(self, group: list[_Pending]) -> None:
        outcomes: dict[int, IngestResult | GatewayError] = {}
        try:
            async with self._store.write_group() as writes:
                tasks, sessions = await self._load_rows(writes, group)
                for index, item in enumerate(group):
                    task, session = tasks.get(item.task_id), sessions.get(item.session_id)
                    try:
                        self._check(task, session, item.frames)
                    except GatewayError as error:
                        outcomes[index] = error
                        continue
                    assert task is not None and session is not None
                    outcomes[index] = await self._apply_frames(
                        writes.tx(item.session_id), task, session, item.frames
                    )
        except Exception as error:
            if len(group) > 1:
                # Nothing was stored. Retry one by one, so that a frame that
                # breaks its transaction fails only its own runner's batch.
                for item in group:
                    await self._write_orm([item])
                return
            log.exception("ingest.batch_failed", task_id=group[0].task_id)
            if not group[0].future.done():
                group[0].future.set_exception(error)
            return
        for index, item in enumerate(group):
            outcome = outcomes[index]
            if item.future.done():
                continue  # its socket went away meanwhile; what it sent is stored
            if isinstance(outcome, GatewayError):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    async def _write_plain(self, group: list[_Pending]) -> bool:
        """The Core path; False (nothing stored) when the group must take the
        ORM path, which sorts out which batch broke it."""
        batches = [PlainBatch(item.task_id, item.session_id, item.frames) for item in group]
        try:
            acks = await self._store.write_rows(partial(store_plain, batches=batches))
        except Exception:
            log.warning("ingest.plain_failed", exc_info=True, batches=len(batches))
            return False
        for item, ack in zip(group, acks, strict=True):
            if item.future.done():
                continue  # its socket went away meanwhile; what it sent is stored
            if isinstance(ack, GatewayError):
                item.future.set_exception(ack)
            else:
                item.future.set_result(IngestResult(ack))
        return True

    @staticmethod
    async def _load_rows(
        writes: WriteGroup, group: list[_Pending]
    ) -> tuple[dict[str, Task], dict[str, Session]]:
        """Every row the group touches, in two queries (locked on PostgreSQL)."""
        task_ids = sorted({item.task_id for item in group})
        session_ids = sorted({item.session_id for item in group})
        tasks = await writes.db.scalars(select(Task).where(Task.id.in_(task_ids)).with_for_update())
        sessions = await writes.db.scalars(
            select(Session).where(Session.id.in_(session_ids)).with_for_update()
        )
        return {row.id: row for row in tasks}, {row.id: row for row in sessions}

    @staticmethod
    def _check(task: Task | None, session: Session | None, frames: list[RunnerFrame]) -> None:
        """Refuse a batch before it changes anything: unknown task or an rseq gap."""
        if task is None or session is None or task.session_id != session.id:
            raise NotFound("task not found")
        check_rseqs(task.acked_rseq, frames)

    async def _apply_frames(
        self, tx: WriteTx, task: Task, session: Session, frames: list[RunnerFrame]
    ) -> IngestResult:
        result = IngestResult(task.acked_rseq)
        for frame in frames:
            if frame.rseq <= task.acked_rseq:
                if isinstance(frame, RunnerStateSave):
                    # The ack of a save was lost: the save itself is stored.
                    result.replies.append(
                        RunnerStateResult(rseq=frame.rseq, ok=True, version=session.state_version)
                    )
                continue
            await self._apply_one(tx, task, session, frame, result)
            task.acked_rseq = frame.rseq
        result.acked_rseq = task.acked_rseq
        if result.finished:
            tx.after_commit(self._wake)
        return result

    async def _apply_one(
        self, tx: WriteTx, task: Task, session: Session, frame: RunnerFrame, result: IngestResult
    ) -> None:
        if isinstance(frame, RunnerEvent):
            await self._event(tx, task, session, frame, result)
        elif isinstance(frame, RunnerApprovalRequest):
            await self._approval(tx, task, frame)
        else:
            self._save_state(tx, task, session, frame, result)

    async def _event(
        self, tx: WriteTx, task: Task, session: Session, frame: RunnerEvent, result: IngestResult
    ) -> None:
        event_type, data = checked_event(frame)
        rseq, ts = frame.rseq, frame.ts
        if event_type != frame.event_type:
            tx.emit(event_type, data, task_id=task.id, rseq=rseq)  # the payload was refused
            return
        final_phase = FINAL_EVENT_PHASES.get(frame.event_type)
        if final_phase is not None:
            if await lifecycle.runner_ended(tx, task, final_phase, data, rseq, ts):
                result.finished = True
            return
        if frame.event_type == EventType.TASK_STARTED:
            lifecycle.mark_running(tx, task, session, data, rseq, ts)
            return
        tx.emit(frame.event_type, data, task_id=task.id, rseq=rseq, ts=ts)
        if frame.event_type == EventType.PLAN_PROPOSED:
            session.plan = data.get("steps")
        elif frame.event_type == EventType.STEP_STARTED:
            session.step = data["step"]

    async def _approval(self, tx: WriteTx, task: Task, frame: RunnerApprovalRequest) -> None:
        if await tx.db.get(Approval, frame.approval_id) is not None:
            tx.emit(
                EventType.ERROR,
                {"code": "duplicate_approval", "message": f"approval id {frame.approval_id} is already used"},
                task_id=task.id,
                rseq=frame.rseq,
            )
            return
        timeout_s = frame.timeout_s or task.approval_timeout_s or self._approval_timeout_s
        now = utcnow()
        on_timeout = frame.on_timeout or OnTimeout(task.on_timeout)
        approval = Approval(
            id=frame.approval_id,
            session_id=task.session_id,
            task_id=task.id,
            owner=task.owner,
            kind=frame.kind,
            prompt=frame.prompt,
            options=[option.value for option in frame.options],
            allow_text=frame.allow_text,
            context=frame.context,
            status=ApprovalStatus.PENDING.value,
            on_timeout=on_timeout.value,
            created_at=now,
            expires_at=now + timedelta(seconds=timeout_s),
        )
        tx.db.add(approval)
        tx.emit(
            EventType.APPROVAL_REQUESTED,
            validate_payload(
                EventType.APPROVAL_REQUESTED,
                {
                    "approval_id": approval.id,
                    "kind": approval.kind,
                    "prompt": approval.prompt,
                    "options": approval.options,
                    "allow_text": approval.allow_text,
                    "context": approval.context,
                    "expires_at": approval.expires_at.isoformat() if approval.expires_at else None,
                    "on_timeout": approval.on_timeout,
                },
            ),
            task_id=task.id,
            rseq=frame.rseq,
        )
        lifecycle.approval_opened(task, await tx.db.get(Session, task.session_id))

    def _save_state(
        self, tx: WriteTx, task: Task, session: Session, frame: RunnerStateSave, result: IngestResult
    ) -> None:
        if frame.expected_version is not None and frame.expected_version != session.state_version:
            result.replies.append(
                RunnerStateResult(
                    rseq=frame.rseq,
                    ok=False,
                    version=session.state_version,
                    message=f"session state is at version {session.state_version}, "
                    f"not {frame.expected_version}: another task saved meanwhile",
                )
            )
            return
        session.state = frame.state
        session.state_version += 1
        session.updated_at = utcnow()
        tx.emit(
            EventType.STATE_SAVED,
            {"version": session.state_version, "checkpoint": frame.checkpoint},
            task_id=task.id,
            rseq=frame.rseq,
        )
        result.replies.append(RunnerStateResult(rseq=frame.rseq, ok=True, version=session.state_version))
