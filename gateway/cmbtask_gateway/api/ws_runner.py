"""``/ws/runner/{task_id}``: a runner's link, authenticated by its task token.

A reader task queues incoming frames; the processor applies whatever has
queued up in one transaction, then acks the highest stored ``rseq``. Under
load this batches hundreds of events per commit without adding latency when
the runner is quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from cmbtask_protocol import (
    CLOSE_AUTH,
    CLOSE_BAD_FRAME,
    CLOSE_CONFLICT,
    CLOSE_NOT_FOUND,
    CLOSE_TOO_BIG,
    CLOSE_UNAVAILABLE,
    RunnerError,
    RunnerHello,
    RunnerOutbound,
    RunnerPing,
    TaskPhase,
)
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from opentelemetry.context import Context
from pydantic import BaseModel, TypeAdapter, ValidationError

from .. import tracing
from ..composition import Gateway
from ..db.engine import DATABASE_UNAVAILABLE
from ..errors import Conflict, GatewayError, NotFound
from ..logs import get_logger
from ..services.ingest import RunnerFrame
from ..services.runner_opening import TaskHead
from .deps import bearer_from, get_gateway
from .sockets import cancel_and_wait, receive_text

router = APIRouter()
log = get_logger(__name__)
_frames: TypeAdapter[Any] = TypeAdapter(RunnerOutbound)
MAX_BATCH = 500
_ACK = '{"type":"ack","rseq":%d}'
HELLO_TIMEOUT_S = 15.0


class _RunnerSocket:
    """Implements ``RunnerConnection`` for the registry."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._send_lock = asyncio.Lock()

    async def send_frame(self, frame: BaseModel) -> None:
        await self.send_text(frame.model_dump_json(exclude_none=True))

    async def send_text(self, text: str) -> None:
        async with self._send_lock:
            await self.ws.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)


@router.websocket("/ws/runner/{task_id}")
async def runner_socket(ws: WebSocket, task_id: str) -> None:
    gateway = get_gateway(ws)
    await ws.accept()
    try:
        gateway.runner_tokens.verify(bearer_from(ws), task_id)
    except GatewayError as error:
        await ws.close(CLOSE_AUTH, error.message)
        return
    try:
        task = await gateway.ingest.task_head(task_id)
    except DATABASE_UNAVAILABLE as error:
        await _unavailable(ws, error)
        return
    if task is None or TaskPhase(task.phase).is_final:
        await ws.close(CLOSE_NOT_FOUND, "task not found" if task is None else f"task already {task.phase}")
        return
    structlog.contextvars.bind_contextvars(task_id=task_id, session_id=task.session_id)
    connection = _RunnerSocket(ws)
    previous = gateway.registry.attach(task_id, connection)
    if previous is not None:
        await previous.close(CLOSE_CONFLICT, "replaced by a newer runner connection")
    gateway.metrics.connections.labels("runner").inc()
    try:
        await _serve(gateway, connection, task, tracing.context_of(task.trace_parent))
    except (WebSocketDisconnect, RuntimeError):
        pass
    except DATABASE_UNAVAILABLE as error:  # the welcome could not be read
        await _unavailable(ws, error)
    finally:
        gateway.registry.detach(task_id, connection)
        gateway.metrics.connections.labels("runner").dec()
        gateway.doorbell.ring()


async def _unavailable(ws: WebSocket, error: BaseException) -> None:
    """Nothing of this connection is stored yet: the runner comes back (through
    a balancer, maybe to another replica) and resends what was not acked."""
    log.warning("runner.database_unavailable", error=str(error)[:200] or type(error).__name__)
    with contextlib.suppress(Exception):
        await ws.close(CLOSE_UNAVAILABLE, "database unavailable; reconnect and resend")


async def _serve(gateway: Gateway, connection: _RunnerSocket, task: TaskHead, trace: Context | None) -> None:
    ws, task_id, session_id = connection.ws, task.id, task.session_id
    try:
        hello = await asyncio.wait_for(_read_frame(gateway, ws), HELLO_TIMEOUT_S)
    except TimeoutError:
        await ws.close(CLOSE_BAD_FRAME, f"no hello within {HELLO_TIMEOUT_S:g} s")
        return
    if not isinstance(hello, RunnerHello):
        await ws.close(CLOSE_BAD_FRAME, "the first frame must be hello")
        return
    try:
        welcome = await gateway.ingest.welcome(task_id, session_id)
    except GatewayError as error:
        await ws.close(CLOSE_NOT_FOUND, error.message)
        return
    await connection.send_frame(welcome)
    for decision in await gateway.approvals.decisions_for(task_id, hello.pending_approvals):
        await connection.send_frame(decision)
    log.info("runner.connected", pid=hello.pid, host=hello.host, acked_rseq=welcome.acked_rseq)
    queue: asyncio.Queue[RunnerFrame | None] = asyncio.Queue(maxsize=10_000)
    reader = asyncio.create_task(_read_loop(gateway, connection, queue))
    try:
        await _process_loop(gateway, connection, queue, task_id, session_id, trace)
    finally:
        await cancel_and_wait([reader])


async def _read_frame(gateway: Gateway, ws: WebSocket) -> Any:
    """One valid frame, or None after telling the runner what was wrong."""
    text = await receive_text(ws)
    limit = gateway.settings.max_runner_frame_bytes
    if text is not None and len(text) > limit:
        await ws.close(CLOSE_TOO_BIG, f"frame larger than {limit} bytes")
        raise WebSocketDisconnect(CLOSE_TOO_BIG)
    try:
        return _frames.validate_json(text or "")
    except ValidationError as error:
        first = error.errors()[0]
        message = f"invalid frame: {first['msg']} at {'.'.join(str(p) for p in first['loc'])}"
        await ws.send_text(RunnerError(code="bad_frame", message=message).model_dump_json())
        return None


async def _read_loop(
    gateway: Gateway, connection: _RunnerSocket, queue: asyncio.Queue[RunnerFrame | None]
) -> None:
    bad = 0
    try:
        while True:
            frame = await _read_frame(gateway, connection.ws)
            if frame is None:
                bad += 1
                if bad >= gateway.settings.max_bad_frames:
                    await connection.close(CLOSE_BAD_FRAME, "too many malformed frames")
                    break
                continue
            bad = 0
            if isinstance(frame, RunnerPing | RunnerHello):
                continue
            await queue.put(frame)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        await queue.put(None)


async def _process_loop(
    gateway: Gateway,
    connection: _RunnerSocket,
    queue: asyncio.Queue[RunnerFrame | None],
    task_id: str,
    session_id: str,
    trace: Context | None,
) -> None:
    while True:
        first = await queue.get()
        if first is None:
            return
        batch: list[RunnerFrame] = [first]
        closing = False
        while len(batch) < MAX_BATCH and not queue.empty():
            item = queue.get_nowait()
            if item is None:
                closing = True
                break
            batch.append(item)
        try:
            result = await gateway.ingest.apply(task_id, session_id, batch, trace=trace)
        except Conflict as error:
            # A gap means frames were lost in flight: the runner resends from
            # its last ack after it reconnects.
            await connection.close(CLOSE_BAD_FRAME, error.message[:120])
            return
        except NotFound as error:  # the session was deleted under the runner
            await connection.close(CLOSE_NOT_FOUND, error.message[:120])
            return
        except DATABASE_UNAVAILABLE as error:  # nothing of the batch is acked; the runner resends it
            await _unavailable(connection.ws, error)
            return
        except Exception:  # nothing of the batch is stored; the runner resends it
            log.exception("runner.ingest_failed")
            await connection.close(1011, "could not store frames; reconnect and resend")
            return
        with contextlib.suppress(Exception):
            # Formatted, not a model dumped: one ack per stored batch, and under a
            # steady trickle a batch is one event.
            await connection.send_text(_ACK % result.acked_rseq)
            for reply in result.replies:
                await connection.send_frame(reply)
        if closing:
            return
