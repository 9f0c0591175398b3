"""One task from start to exit: link up, run the engine, report, leave.

The event loop (main thread) owns the link and the signals; the engine runs
in a worker thread; output capture has its own threads. Whatever happens —
success, an engine exception, SIGTERM, a cancel from the gateway, the local
timeout backstop — ends in exactly one final task event, which the runner
waits (bounded) to see acknowledged before it exits with a code that says
how the task ended.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import socket
import threading
import traceback
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import structlog
from cmbtask_protocol import (
    CANCEL_TIMEOUT,
    CLOSE_NOT_FOUND,
    EventType,
    RunnerApprovalDecision,
    RunnerExit,
    RunnerStateResult,
    RunnerWelcome,
    signal_reason,
)

from . import tracing
from .capture import OutputCapture
from .config import RunnerConfig
from .context import RunnerContext
from .engines import load_engine
from .engines.base import EngineError, TaskCancelled
from .link import Inbound, Link, LinkFatal
from .logs import LogSink, configure_logging
from .outbox import Outbox

__all__ = ["RunResult", "run_task"]

log = structlog.get_logger("cmbtask_runner.running")

#: the runner's own timeout backstop fires this long after ``timeout_s`` (the gateway's comes first)
LOCAL_TIMEOUT_MARGIN_S = 2.0
_TRACEBACK_CHARS = 4000


@dataclass
class RunResult:
    exit_code: RunnerExit
    final_event: str | None = None
    reason: str = ""
    acked: bool = False


@dataclass
class _EngineResult:
    result: dict[str, Any] | None = None
    error: BaseException | None = None


@dataclass
class _Run:
    """One runner's parts, made once at start."""

    config: RunnerConfig
    sink: LogSink
    ctx: RunnerContext
    link: Link
    link_task: asyncio.Task[None]
    welcomed: asyncio.Event
    terminated: asyncio.Event


async def run_task(config: RunnerConfig, sink: LogSink) -> RunResult:
    loop = asyncio.get_running_loop()
    link: Link | None = None

    def wake() -> None:
        if link is not None:
            with suppress(RuntimeError):  # the loop is gone: the runner is exiting anyway
                loop.call_soon_threadsafe(link.wake)

    outbox = Outbox(config.work_dir / "outbox.spill.jsonl", on_put=wake)
    ctx = RunnerContext(config.work_dir, outbox)
    inbound: asyncio.Queue[Inbound] = asyncio.Queue()
    link = Link(
        gateway_url=config.gateway_url,
        task_id=config.task_id,
        token=config.token,
        outbox=outbox,
        inbound=inbound,
        pending_approvals=ctx.pending_approval_ids,
        pid=os.getpid(),
        host=socket.gethostname(),
        give_up_s=config.give_up_s,
    )
    welcomed = asyncio.Event()
    helpers = [
        asyncio.create_task(link.run(), name="link"),
        asyncio.create_task(_consume(inbound, ctx, welcomed), name="inbound"),
    ]
    run = _Run(config, sink, ctx, link, helpers[0], welcomed, _watch_signals(loop, ctx))
    try:
        return await _run_linked(run)
    finally:
        await link.close()
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)


async def _consume(inbound: asyncio.Queue[Inbound], ctx: RunnerContext, welcomed: asyncio.Event) -> None:
    """The one consumer of what the gateway says, in the order it said it."""
    while True:
        frame = await inbound.get()
        if isinstance(frame, RunnerWelcome):
            ctx.on_welcome(frame)
            welcomed.set()
        elif isinstance(frame, RunnerApprovalDecision):
            ctx.on_decision(frame)
        elif isinstance(frame, RunnerStateResult):
            ctx.on_state_result(frame)
        else:
            ctx.cancel(frame.reason)


def _watch_signals(loop: asyncio.AbstractEventLoop, ctx: RunnerContext) -> asyncio.Event:
    """SIGTERM/SIGINT stop the engine as a cancel does. Unless a cancel reaches
    the runner too, the task is reported failed, naming the signal: nobody
    asked for it (a pod deleted, a node drained). Whether the gateway did ask
    is the gateway's to say (``lifecycle.ending_when_stopped``)."""
    terminated = asyncio.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        log.info("runner.signal", signal=name)
        ctx.terminate(name)
        terminated.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return terminated


async def _run_linked(run: _Run) -> RunResult:
    config, sink, ctx, link, link_task = run.config, run.sink, run.ctx, run.link, run.link_task
    welcomed = asyncio.create_task(run.welcomed.wait())
    stopped = asyncio.create_task(run.terminated.wait())
    await asyncio.wait({welcomed, link_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    welcomed.cancel()
    stopped.cancel()
    if link_task.done():
        return _link_fatal(link_task)
    if not ctx.welcomed:
        log.info("runner.stopped_before_welcome")
        return RunResult(RunnerExit.TERMINATED, reason="terminated before the task started")
    configure_logging(sink, task_id=config.task_id, session_id=ctx.task.session_id, **tracing.log_fields())
    final_type, data = await _run_engine(config, sink, ctx, link_task)
    if final_type is None:
        return _link_fatal(link_task)
    return await _report(config, link, link_task, ctx, final_type, data)


def _link_fatal(link_task: asyncio.Task[None]) -> RunResult:
    error = link_task.exception() if link_task.done() and not link_task.cancelled() else None
    reason = str(error) if error is not None else "link ended"
    log.error("runner.link_fatal", reason=reason)
    return RunResult(RunnerExit.LINK_LOST, reason=reason)


async def _run_engine(
    config: RunnerConfig, sink: LogSink, ctx: RunnerContext, link_task: asyncio.Task[None]
) -> tuple[str | None, dict[str, Any]]:
    """Run the engine in a worker thread; return the final event to send (None: link lost)."""
    loop = asyncio.get_running_loop()
    if ctx.cancelled.is_set():  # cancelled while queued or starting: do not start at all
        return _final_event(ctx, _EngineResult(), finished=False)
    _announce(ctx)
    cancel_seen = _cancel_event(loop, ctx)
    timer = None
    if ctx.task.timeout_s is not None:
        timer = loop.call_later(ctx.task.timeout_s + LOCAL_TIMEOUT_MARGIN_S, ctx.cancel, CANCEL_TIMEOUT)
    capture = OutputCapture(ctx.emit, max_lines_per_s=_lines_cap(ctx.task.params))
    capture.start()
    ctx.flush_output = capture.flush
    sink.retarget(capture.saved_stderr)
    outcome = _EngineResult()
    done = loop.create_future()
    args = (ctx, outcome, loop, done)
    # In a copy of this context: the engine's spans are children of the runner's.
    thread_main = contextvars.copy_context().run
    threading.Thread(target=thread_main, args=(_engine_thread, *args), name="engine", daemon=True).start()
    try:
        await _await_engine(config, ctx, done, link_task, cancel_seen)
    finally:
        if timer is not None:
            timer.cancel()
        ctx.flush_output = None
        await asyncio.to_thread(capture.stop)
    if link_task.done():
        return None, {}
    return _final_event(ctx, outcome, finished=done.done())


def _announce(ctx: RunnerContext) -> None:
    task = ctx.task
    ctx.emit(
        EventType.TASK_STARTED,
        {
            "engine": task.engine,
            "mode": task.mode,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "resumed_from_version": ctx.started_from_version,
        },
    )
    log.info(
        "task.started", engine=task.engine, mode=task.mode, resumed_from_version=ctx.started_from_version
    )


def _cancel_event(loop: asyncio.AbstractEventLoop, ctx: RunnerContext) -> asyncio.Event:
    """An event-loop view of ``ctx.cancelled`` (which engines set from any thread)."""
    seen = asyncio.Event()

    def on_cancel() -> None:
        loop.call_soon_threadsafe(seen.set)

    ctx.cancel_hooks.append(on_cancel)
    if ctx.cancelled.is_set():  # cancelled before the hook was in place
        seen.set()
    return seen


async def _await_engine(
    config: RunnerConfig,
    ctx: RunnerContext,
    done: asyncio.Future[None],
    link_task: asyncio.Task[None],
    cancel_seen: asyncio.Event,
) -> None:
    """Until the engine returns; on cancel, a grace to stop; on a dead link, stop it."""
    waiter = asyncio.create_task(cancel_seen.wait())
    watched: set[asyncio.Future[Any]] = {done, link_task, waiter}
    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if link_task.done():
        # Nobody can hear the task any more: stop the engine (and its children).
        ctx.cancel("link lost")
    if ctx.cancelled.is_set() and not done.done():
        await asyncio.wait({done}, timeout=config.cancel_grace_s)


def _lines_cap(params: dict[str, Any]) -> int:
    cap = params.get("max_output_lines_per_s")
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else 5000


def _engine_thread(
    ctx: RunnerContext, outcome: _EngineResult, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]
) -> None:
    attributes = {"cmbtask.engine": ctx.task.engine, "cmbtask.mode": ctx.task.mode}
    with tracing.span("engine.run", attributes) as span:
        steps = ctx.observer = tracing.step_spans()
        try:
            engine = load_engine(ctx.task.engine)
            engine.validate(ctx.task)
            outcome.result = engine.run(ctx)
        except BaseException as exc:  # everything an engine raises ends up in the final event
            outcome.error = exc
            if span is not None:
                span.set_status(tracing.error_status(exc))
        finally:
            if steps is not None:
                steps.close()
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_done, done)


def _set_done(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _final_event(ctx: RunnerContext, outcome: _EngineResult, *, finished: bool) -> tuple[str, dict[str, Any]]:
    error = outcome.error
    if ctx.failure is not None:
        return EventType.TASK_FAILED, {"reason": ctx.failure, "budget": ctx.budget.summary()}
    succeeded = finished and error is None
    if ctx.cancelled.is_set() and (not succeeded or ctx.cancel_reason == CANCEL_TIMEOUT):
        if ctx.cancel_reason == CANCEL_TIMEOUT:
            return EventType.TASK_TIMED_OUT, {"reason": f"timed out after {ctx.task.timeout_s} s"}
        if (signal_name := ctx.terminated_by) is not None:
            return EventType.TASK_FAILED, {"reason": signal_reason(signal_name), "signal": signal_name}
        return EventType.TASK_CANCELLED, {"reason": ctx.cancel_reason}
    if succeeded:
        return EventType.TASK_SUCCEEDED, {"reason": "", "result": outcome.result}
    if isinstance(error, TaskCancelled):
        return EventType.TASK_CANCELLED, {"reason": str(error) or "cancelled"}
    if isinstance(error, EngineError):
        return EventType.TASK_FAILED, {"reason": str(error)}
    assert error is not None
    short = "".join(traceback.format_exception(error)[-6:])[-_TRACEBACK_CHARS:]
    return EventType.TASK_FAILED, {"reason": f"{type(error).__name__}: {error}", "traceback": short}


async def _report(
    config: RunnerConfig,
    link: Link,
    link_task: asyncio.Task[None],
    ctx: RunnerContext,
    final_type: str,
    data: dict[str, Any],
) -> RunResult:
    reason = str(data.get("reason", ""))
    rseq = ctx.emit_numbered(final_type, data)
    log.info("task.finished", final_event=final_type, reason=reason, rseq=rseq)
    acked_wait = asyncio.create_task(link.wait_acked(rseq, config.final_ack_s))
    await asyncio.wait({acked_wait, link_task}, return_when=asyncio.FIRST_COMPLETED)
    acked = acked_wait.done() and acked_wait.result()
    acked_wait.cancel()
    if not acked and _task_already_final(link_task):
        # The gateway stored our final event but its ack was lost in a restart;
        # now it refuses the finished task (4404). The outcome is recorded.
        log.info("task.final_presumed_stored", final_event=final_type)
        acked = True
    if not acked:
        log.error("task.final_not_acked", final_event=final_type, waited_s=config.final_ack_s)
        return RunResult(RunnerExit.FINAL_NOT_ACKED, final_type, reason, acked=False)
    code = RunnerExit.TERMINATED if data.get("signal") else RunnerExit.for_final_event(final_type)
    return RunResult(code, final_type, reason, acked=True)


def _task_already_final(link_task: asyncio.Task[None]) -> bool:
    if not link_task.done() or link_task.cancelled():
        return False
    error = link_task.exception()
    return isinstance(error, LinkFatal) and error.code == CLOSE_NOT_FOUND
