"""Tasks: submit, read, cancel, and the gateway's side of finishing them.

Phases change only through ``lifecycle``, which also decides which queued
task may start; this module holds the requests that lead there.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from importlib.metadata import entry_points
from typing import Any

from cmbtask_protocol import (
    ACTIVE_TASK_PHASES,
    BUILTIN_ENGINE_PARAMS,
    MAX_PARAMS_BYTES,
    EnginesDescription,
    RunnerCancel,
    TaskCreate,
    TaskPhase,
    TaskView,
)
from pydantic import ValidationError
from sqlalchemy import Connection, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .. import tracing
from ..catalog import EngineCatalog, refusal
from ..db.models import Session, Task, utcnow
from ..errors import Conflict, Invalid, NotFound
from ..limits import UserLimits
from ..runner_sockets import RunnerRegistry
from ..store import EventStore
from . import lifecycle
from .keys import stored_key_variables
from .starts import Startable, any_startable, claim_startable, record_handles
from .submits import Submission, store_submission
from .views import task_view

__all__ = ["TaskService", "available_engines"]


#: (when read, engine names): reading entry points opens every installed
#: distribution's metadata, milliseconds that each submit used to pay
_installed: tuple[float, list[str]] | None = None
_INSTALLED_TTL_S = 30.0


def available_engines() -> list[str]:
    """Engine names registered in the ``cmbtask.engines`` entry-point group
    (read again when the last reading is older than 30 s)."""
    global _installed
    now = time.monotonic()
    if _installed is None or now - _installed[0] > _INSTALLED_TTL_S:
        _installed = (now, sorted({ep.name for ep in entry_points(group="cmbtask.engines")}))
    return list(_installed[1])


class TaskService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: EventStore,
        registry: RunnerRegistry,
        wake_dispatcher: Callable[[], None],
        *,
        catalog: EngineCatalog | None = None,
        limits: UserLimits | None = None,
    ) -> None:
        self._limits = limits
        self._sessions = sessions
        self._catalog = catalog or EngineCatalog()
        self._store = store
        self._registry = registry
        self._wake = wake_dispatcher
        #: (task id, handle): stops a runner whose cancel was asked for (the dispatcher's)
        self._stop_runner: Callable[[str, str], None] | None = None

    def stop_runners_with(self, stop: Callable[[str, str], None]) -> None:
        """Who stops a runner once its cancel is committed (set by composition)."""
        self._stop_runner = stop

    async def _own_task(self, db: AsyncSession, owner: str, task_id: str) -> Task:
        task = await db.get(Task, task_id)
        if task is None or task.owner != owner:
            raise NotFound(f"task {task_id} not found")
        return task

    async def get(self, owner: str, task_id: str) -> TaskView:
        async with self._sessions() as db:
            return task_view(await self._own_task(db, owner, task_id))

    async def list_for_session(self, owner: str, session_id: str) -> list[TaskView]:
        async with self._sessions() as db:
            session = await db.get(Session, session_id)
            if session is None or session.owner != owner:
                raise NotFound(f"session {session_id} not found")
            rows = await db.scalars(
                select(Task).where(Task.session_id == session_id).order_by(Task.created_at, Task.id)
            )
            return [task_view(row) for row in rows]

    def _validate(
        self, body: TaskCreate, description: EnginesDescription | None, own_keys: set[str]
    ) -> dict[str, Any]:
        """The params to store; ``Invalid`` (422) for a task no runner here could start."""
        engines = available_engines() if description is None else sorted(description.engines)
        if body.engine not in engines:
            raise Invalid(
                f"unknown engine {body.engine!r}; available: {', '.join(engines)}", code="unknown_engine"
            )
        engine = description.engines[body.engine] if description is not None else None
        if engine is not None and (reason := refusal(engine, body.mode, own_keys)):
            raise Invalid(
                f"engine {body.engine!r} cannot run mode {body.mode!r} here: {reason}",
                code="engine_unavailable",
                detail={"engine": body.engine, "mode": body.mode, "reason": reason},
            )
        encoded = json.dumps(body.params, separators=(",", ":"), ensure_ascii=False)
        size = len(encoded.encode(errors="surrogatepass"))
        if size > MAX_PARAMS_BYTES:
            raise Invalid(
                f"params take {size} bytes as JSON; at most {MAX_PARAMS_BYTES}", code="too_large"
            ).with_status(413)
        model = BUILTIN_ENGINE_PARAMS.get(body.engine)
        if model is None:
            return body.params
        try:
            return model.model_validate(body.params).model_dump(mode="json", exclude_unset=True)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in error.errors()
            )
            raise Invalid(
                f"invalid params for engine {body.engine!r}: {problems}",
                code="invalid_params",
                detail=error.errors(include_url=False, include_context=False),
            ) from None

    async def submit(
        self, owner: str, session_id: str, body: TaskCreate, *, task_id: str | None = None
    ) -> TaskView:
        """Queue a task; ``task_id`` is for callers whose ids must be stable."""
        task_id = task_id or str(uuid.uuid4())
        attributes = {
            "cmbtask.task_id": task_id,
            "cmbtask.session_id": session_id,
            "cmbtask.engine": body.engine,
        }
        with tracing.span("task.submit", attributes=attributes):
            # Taken here: inside the write below, the current span is the store's.
            return await self._submit(owner, session_id, body, task_id, tracing.current_traceparent())

    async def _submit(
        self, owner: str, session_id: str, body: TaskCreate, task_id: str, trace_parent: str | None
    ) -> TaskView:
        own_keys = await self._store.read_rows(partial(stored_key_variables, user=owner))
        params = self._validate(body, await self._catalog.get(), own_keys)
        submission = Submission(task_id, session_id, owner, body, params, trace_parent)
        view = await self._store.write_rows(
            partial(store_submission, submission=submission, limits=self._limits)
        )
        self._wake()
        return view

    async def cancel(self, owner: str, task_id: str, *, reason: str | None = None) -> TaskView:
        async with self._sessions() as db:
            session_id = (await self._own_task(db, owner, task_id)).session_id
        reason = reason or f"cancelled by {owner}"
        return await self.request_cancel(task_id, session_id, reason)

    async def request_cancel(self, task_id: str, session_id: str, reason: str) -> TaskView:
        """Queued tasks end at once; running ones are asked to stop (socket and
        executor); the watchdog finishes any runner that dies without saying so."""
        async with self._store.write(session_id) as tx:
            task = await tx.db.get(Task, task_id, with_for_update=True)
            if task is None:
                raise NotFound(f"task {task_id} not found")
            phase = TaskPhase(task.phase)
            if phase.is_final:
                raise Conflict(f"task already finished ({phase.value})", code="already_finished")
            if phase is TaskPhase.QUEUED:
                # A waiting task has no runner: it leaves the queue at once.
                await lifecycle.finish(tx, task, TaskPhase.CANCELLED, reason=reason)
                tx.after_commit(self._wake)
            elif not task.cancel_requested:
                task.cancel_requested = True
                task.cancel_reason = reason
                task_id_, handle = task.id, task.handle
                tx.after_commit(lambda: self._registry.send(task_id_, RunnerCancel(reason=reason)))
                if handle and (stop := self._stop_runner) is not None:
                    # Now, not at the watchdog's next look: a runner that honours the
                    # cancel at once ends its task before then, and its pod or
                    # process would be left to linger.
                    tx.after_commit(lambda: stop(task_id_, handle))
                tx.after_commit(self._wake)
        return task_view(task)

    async def active(self) -> list[Task]:
        async with self._sessions() as db:
            rows = await db.scalars(
                select(Task).where(Task.phase.in_([phase.value for phase in ACTIVE_TASK_PHASES]))
            )
            return list(rows)

    async def count_active(self) -> int:
        """How many tasks hold a runner slot: a count, not the rows ``active`` loads."""
        return await self._store.read_rows(_count_active)

    async def finish(
        self, task_id: str, session_id: str, phase: TaskPhase, *, reason: str, exit_code: int | None = None
    ) -> bool:
        """Finish from the gateway's side (watchdog, launch failure). Returns
        False when the task had already finished."""
        async with self._store.write(session_id) as tx:
            task = await tx.db.get(Task, task_id, with_for_update=True)
            if task is None:
                return False
            if not await lifecycle.finish(tx, task, phase, reason=reason, exit_code=exit_code):
                return False
            tx.after_commit(self._wake)
        return True

    async def finish_died(
        self, task_id: str, session_id: str, *, reason: str, exit_code: int | None = None
    ) -> bool:
        """The task's runner died (the watchdog saw it): retried if it may be, else
        failed (``lifecycle.finish_died``). False when the task had already ended."""
        async with self._store.write(session_id) as tx:
            task = await tx.db.get(Task, task_id, with_for_update=True)
            if task is None or not await lifecycle.finish_died(tx, task, reason=reason, exit_code=exit_code):
                return False
            tx.after_commit(self._wake)
        return True

    async def start_wave(self, limit: int, executor: str) -> list[Startable]:
        """Claim up to ``limit`` startable tasks for ``executor`` (``queued →
        starting``), oldest first, in one transaction (``services.starts``)."""
        now = utcnow()
        if not await self._store.read_rows(partial(any_startable, now=now)):
            return []
        return await self._store.write_rows(partial(claim_startable, limit=limit, executor=executor, now=now))

    async def set_handles(self, handles: Mapping[str, str]) -> None:
        """Record the executor's handle of each launched task, in one transaction."""
        if handles:
            await self._store.write_rows(partial(record_handles, handles=dict(handles)))


def _count_active(connection: Connection) -> int:
    phases = [phase.value for phase in ACTIVE_TASK_PHASES]
    return int(connection.scalar(select(func.count()).select_from(Task).where(Task.phase.in_(phases))) or 0)
