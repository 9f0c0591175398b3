"""Starting queued tasks within the concurrency limit, and watching them.

The dispatcher launches the queued tasks that may start (oldest first; a
session's next task only once the one before it ended, see
``services/lifecycle``) while fewer than ``max_concurrent_tasks`` are active.
The watchdog notices what runners cannot report themselves: a runner that
died without a final event, a task past its timeout, a cancel that was not
honoured, a runner that never connected.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from cmbtask_protocol import CANCEL_TIMEOUT, RunnerCancel, TaskPhase

from . import tracing
from .auth import RunnerTokens
from .coalescing import Coalescing
from .db.models import Task, utcnow
from .doorbell import Doorbell
from .executors.base import Executor, ExecutorError, ExecutorStatus, LaunchRequest
from .logs import get_logger
from .loop_errors import LoopErrors
from .runner_sockets import RunnerRegistry
from .services import lifecycle
from .services.keys import KeyService
from .services.starts import Startable
from .services.tasks import TaskService
from .services.views import aware
from .settings import Settings

__all__ = ["Dispatcher"]

log = get_logger(__name__)


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        tasks: TaskService,
        tokens: RunnerTokens,
        registry: RunnerRegistry,
        doorbell: Doorbell,
        keys: KeyService | None = None,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._executor = executor
        self._tasks = tasks
        self._tokens = tokens
        self._registry = registry
        self._doorbell = doorbell
        #: task id -> monotonic time the cancel was first seen by the watchdog
        self._cancel_seen: dict[str, float] = {}
        self._stopping: set[str] = set()
        # Strong references: the event loop keeps only weak ones to its tasks.
        self._stoppers: set[asyncio.Task[None]] = set()
        #: (task id, handle) stored before it returns, in a write shared with
        #: the launches that ended meanwhile
        self._record_handle: Coalescing[tuple[str, str], None] = Coalescing(self._write_handles)

    async def run(self) -> None:
        """Dispatch and watch until cancelled."""
        errors = LoopErrors("dispatch.loop_error")
        while True:
            try:
                await self.dispatch_once()
                await self.watch_once()
                errors.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                errors.failed(error)
            await self._doorbell.wait(self._settings.watchdog_interval_s)

    async def adopt(self) -> None:
        """After a restart: keep tasks whose runner lives, finish the others."""
        active = [task for task in await self._tasks.active() if task.handle]
        if not active:
            return
        statuses = await self._executor.adopt([task.handle for task in active if task.handle])
        by_handle = {status.handle: status for status in statuses}
        for task in active:
            status = by_handle.get(task.handle or "")
            if status is not None and not status.alive:
                await self._finish_dead(task, status)
        log.info("dispatch.adopted", tasks=len(active), alive=sum(s.alive for s in statuses))

    async def dispatch_once(self) -> None:
        if self._executor.name == "none":
            return  # runners are started by someone else and connect on their own
        free = self._settings.max_concurrent_tasks - await self._tasks.count_active()
        if free <= 0:
            return
        # One transaction claims the whole wave and the launches run side by
        # side: 50 tasks submitted at once, claimed and launched one after the
        # other, each write queued behind the running tasks' events, took 16 s
        # to all have a process.
        wave = await self._tasks.start_wave(free, self._executor.name)
        if not wave:
            return
        envs = await self._keys.runner_envs(task.owner for task in wave) if self._keys else {}
        await asyncio.gather(*(self._launch(task, envs.get(task.owner, {})) for task in wave))

    async def _launch(self, task: Startable, provider_env: dict[str, str]) -> None:
        # In the trace of the task's submit, whichever replica or attempt this is.
        attributes = {"cmbtask.task_id": task.id, "cmbtask.attempt": task.attempt}
        with tracing.span("task.launch", parent=tracing.context_of(task.trace_parent), attributes=attributes):
            await self._launch_traced(task, provider_env)

    async def _launch_traced(self, task: Startable, provider_env: dict[str, str]) -> None:
        bound = log.bind(task_id=task.id, session_id=task.session_id)
        request = LaunchRequest(
            task_id=task.id,
            session_id=task.session_id,
            owner=task.owner,
            engine=task.engine,
            mode=task.mode,
            gateway_url=self._settings.resolved_public_url,
            token=self._tokens.issue(task.id, (task.timeout_s or 0) + self._settings.runner_token_ttl_s),
            timeout_s=task.timeout_s,
            attempt=task.attempt,
            params=dict(task.params or {}),
            provider_env=provider_env,
            trace_parent=tracing.current_traceparent(),
        )
        try:
            handle = await self._executor.launch(request)
        except ExecutorError as error:
            bound.warning("dispatch.launch_failed", error=str(error))
            await self._tasks.finish(task.id, task.session_id, TaskPhase.FAILED, reason=str(error))
            return
        await self._record_handle((task.id, handle))
        bound.info("dispatch.launched", executor=self._executor.name, handle=handle)

    async def _write_handles(self, handles: list[tuple[str, str]]) -> list[Exception | None]:
        await self._tasks.set_handles(dict(handles))
        return [None] * len(handles)

    async def watch_once(self) -> None:
        now = utcnow()
        active = await self._tasks.active()
        self._forget_ended({task.id for task in active})
        for task in active:
            if task.cancel_requested:
                await self._enforce_cancel(task)
            elif self._timed_out(task, now):
                await self._tasks.request_cancel(task.id, task.session_id, CANCEL_TIMEOUT)
            elif not self._registry.is_connected(task.id):
                await self._check_quiet(task, now)

    def _forget_ended(self, active_ids: set[str]) -> None:
        """Drop what is kept for tasks that have ended since: a runner that
        honoured its cancel ends its task itself, and nothing here saw it end."""
        self._stopping &= active_ids
        for task_id in self._cancel_seen.keys() - active_ids:
            del self._cancel_seen[task_id]

    @staticmethod
    def _timed_out(task: Task, now: object) -> bool:
        started = aware(task.started_at)
        if task.timeout_s is None or started is None:
            return False
        return bool(started + timedelta(seconds=task.timeout_s) < now)  # type: ignore[operator]

    def stop_soon(self, task_id: str, handle: str) -> None:
        """Stop the runner behind ``handle`` in the background, once per task."""
        if task_id in self._stopping:
            return
        self._stopping.add(task_id)
        stopper = asyncio.create_task(self._stop(handle))
        self._stoppers.add(stopper)
        stopper.add_done_callback(self._stoppers.discard)

    async def _enforce_cancel(self, task: Task) -> None:
        first_seen = self._cancel_seen.setdefault(task.id, time.monotonic())
        if task.handle:
            self.stop_soon(task.id, task.handle)
        status = await self._executor.inspect(task.handle) if task.handle else None
        grace_over = time.monotonic() - first_seen > self._settings.cancel_grace_s + 5
        if (status is not None and not status.alive) or grace_over or task.handle is None:
            phase, reason = lifecycle.ending_when_stopped(task)
            if await self._tasks.finish(task.id, task.session_id, phase, reason=reason or ""):
                log.info("dispatch.cancel_enforced", task_id=task.id, phase=phase.value)
            self._cancel_seen.pop(task.id, None)

    async def _stop(self, handle: str) -> None:
        try:
            await self._executor.cancel(handle, grace_s=self._settings.cancel_grace_s)
        except ExecutorError as error:
            log.warning("dispatch.cancel_failed", handle=handle, error=str(error))

    async def _check_quiet(self, task: Task, now: object) -> None:
        if task.handle is not None:
            status = await self._executor.inspect(task.handle)
            if not status.alive:
                # A final frame may still be in flight on a socket that just closed.
                await asyncio.sleep(0.2)
                await self._finish_dead(task, status)
                return
        # No handle: the gateway that marked it starting died before its launch
        # was recorded (or is launching it now): only the start timeout can tell.
        # A retry's runner has its own time to connect, from when its attempt was due.
        due = aware(task.retry_at or task.created_at)
        deadline = None if due is None else due + timedelta(seconds=self._settings.start_timeout_s)
        if task.phase == TaskPhase.STARTING.value and deadline is not None and deadline < now:  # type: ignore[operator]
            await self._tasks.request_cancel(task.id, task.session_id, "runner never connected")

    async def _finish_dead(self, task: Task, status: ExecutorStatus) -> None:
        """A runner ended without its final event: as the cancel asked for, or it
        died (retried if the task may be), or failed."""
        phase, _ = lifecycle.ending_when_stopped(task)
        words = status.reason or "runner exited"
        text = f"runner process ended without reporting a result: {words}"
        code = status.exit_code
        if phase is TaskPhase.FAILED and status.died:
            ended = await self._tasks.finish_died(task.id, task.session_id, reason=text, exit_code=code)
        else:
            ended = await self._tasks.finish(task.id, task.session_id, phase, reason=text, exit_code=code)
        if ended:
            log.warning("dispatch.runner_dead", task_id=task.id, reason=text, exit_code=code)
        self._stopping.discard(task.id)

    async def cancel_runner(self, task: Task, reason: str) -> None:
        await self._registry.send(task.id, RunnerCancel(reason=reason))
        if task.handle:
            await self._stop(task.handle)
