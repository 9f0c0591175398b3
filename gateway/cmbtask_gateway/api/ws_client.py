"""``/ws/sessions/{id}?after=N``: the backlog after N, then live events.

The client is subscribed to the hub *before* the backlog is read, so nothing
published meanwhile is missed; anything at or below the last ``seq`` sent is
dropped, so nothing is sent twice. Commands from the client share the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from cmbtask_protocol import (
    CLOSE_AUTH,
    CLOSE_BAD_FRAME,
    CLOSE_LIMIT,
    CLOSE_NOT_FOUND,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_BIG,
    CLOSE_UNAVAILABLE,
    MAX_DB_INT,
    CancelTaskCommand,
    ClientCommand,
    PingCommand,
    ResolveApprovalCommand,
    SubmitTaskCommand,
    WsError,
    WsHeartbeat,
    WsHello,
    WsPong,
    WsReplayed,
    WsResult,
)
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError

from .. import jsontext
from ..composition import Gateway
from ..db.engine import DATABASE_UNAVAILABLE
from ..errors import GatewayError
from ..hub import Poke, Subscriber
from ..logs import get_logger
from .deps import get_gateway, identity_for_connection
from .sockets import cancel_and_wait, receive_text

router = APIRouter()
log = get_logger(__name__)
_commands: TypeAdapter[Any] = TypeAdapter(ClientCommand)


class _ClientSocket:
    def __init__(self, ws: WebSocket, gateway: Gateway, user: str, session_id: str) -> None:
        self.ws = ws
        self.gateway = gateway
        self.user = user
        self.session_id = session_id
        self.last_sent = 0
        self.bad_frames = 0

    async def send_model(self, frame: Any) -> None:
        await self.ws.send_text(frame.model_dump_json(exclude_none=True))

    async def replay(self, after: int, until: int) -> None:
        """Send stored events in ``(after, until]`` page by page.

        Never past ``until``: the pump fills a gap up to the event it is about
        to send, and an unbounded page sent that event (and more) twice."""
        self.last_sent = after
        page_size = self.gateway.settings.replay_page_size
        while self.last_sent < until:
            page = await self.gateway.store.page(self.session_id, self.last_sent, page_size, until=until)
            if not page:
                break
            for item in page:
                await self.ws.send_text(jsontext.dumps(item))
                # Per event: a sender cancelled mid-page still knows its cursor.
                self.last_sent = item["seq"]
            self.gateway.metrics.events_out.inc(len(page))

    async def pump(self, subscriber: Subscriber) -> None:
        """Live events in order; fill any gap from the database."""
        heartbeat = self.gateway.settings.heartbeat_s
        queue = subscriber.queue
        while True:
            try:
                # wait_for costs a task and a timer per call: under load it was
                # half of the CPU per delivery, so it is only paid when idle.
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    # asyncio.timeout is a timer only; wait_for also makes a task
                    async with asyncio.timeout(heartbeat):
                        item = await queue.get()
                except TimeoutError:
                    await self.send_model(WsHeartbeat(last_seq=self.last_sent))
                    continue
            if isinstance(item, Poke):  # another replica stored these: read them
                if item.last_seq > self.last_sent:
                    await self.replay(self.last_sent, item.last_seq)
                continue
            if item.seq <= self.last_sent:
                continue
            if item.seq > self.last_sent + 1:
                await self.replay(self.last_sent, item.seq - 1)
            await self.ws.send_text(item.text)
            self.last_sent = item.seq
            self.gateway.metrics.events_out.inc()

    async def receive(self) -> None:
        limit = self.gateway.settings.max_client_frame_bytes
        while True:
            message = await receive_text(self.ws)
            if message is None:
                await self.refuse(None, "bad_frame", "frames must be UTF-8 JSON text")
                continue
            if len(message) > limit:
                await self.ws.close(CLOSE_TOO_BIG, f"frame larger than {limit} bytes")
                return
            await self.handle(message)

    async def handle(self, message: str) -> None:
        try:
            command = _commands.validate_json(message)
        except ValidationError as error:
            await self.refuse(None, "bad_command", _describe(error))
            return
        self.bad_frames = 0
        try:
            result = await self.execute(command)
        except GatewayError as error:
            await self.send_model(WsError(id=command.id, code=error.code, message=error.message))
            return
        if command.id is not None and result is not None:
            await self.send_model(WsResult(id=command.id, ok=True, result=result))

    async def refuse(self, command_id: str | None, code: str, message: str) -> None:
        self.bad_frames += 1
        await self.send_model(WsError(id=command_id, code=code, message=message))
        if self.bad_frames >= self.gateway.settings.max_bad_frames:
            await self.ws.close(CLOSE_BAD_FRAME, "too many malformed frames")
            raise WebSocketDisconnect(CLOSE_BAD_FRAME)

    async def execute(self, command: Any) -> dict[str, Any] | None:
        gateway, user = self.gateway, self.user
        if isinstance(command, PingCommand):
            await self.send_model(WsPong(id=command.id))
            return None
        if isinstance(command, SubmitTaskCommand):
            task = await gateway.tasks.submit(user, self.session_id, command.task)
            return task.model_dump(mode="json")
        if isinstance(command, ResolveApprovalCommand):
            approval = await gateway.approvals.resolve(
                user, command.approval_id, command.decision, command.text
            )
            return approval.model_dump(mode="json")
        if isinstance(command, CancelTaskCommand):
            return (await gateway.tasks.cancel(user, command.task_id)).model_dump(mode="json")
        raise AssertionError(f"unhandled command {command!r}")


def _describe(error: ValidationError) -> str:
    # Not json.loads to tell: it raises RecursionError on deeply nested input,
    # a RuntimeError, which the socket loop takes for a client that went away.
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return "frame is not valid JSON"
    where = ".".join(str(part) for part in first["loc"])
    return f"invalid command at {where or 'frame'}: {first['msg']}"


@router.websocket("/ws/sessions/{session_id}")
async def session_socket(ws: WebSocket, session_id: str) -> None:
    gateway = get_gateway(ws)
    await ws.accept()
    try:
        identity = await identity_for_connection(ws)
        user = identity.user
        last_seq = await gateway.sessions.last_seq(user, session_id)
    except GatewayError as error:
        code = CLOSE_AUTH if error.status_code == 401 else CLOSE_NOT_FOUND
        await ws.close(code, error.message)
        return
    except DATABASE_UNAVAILABLE as error:
        await _unavailable(ws, error, ws.query_params.get("after", "0")[:20])
        return
    after_raw = ws.query_params.get("after", "0")
    # isdigit alone takes "²" and 5,000-digit numbers, which int() refuses
    valid = after_raw.isascii() and after_raw.isdigit() and len(after_raw) <= len(str(MAX_DB_INT))
    if not (valid and int(after_raw) <= MAX_DB_INT):
        await ws.close(CLOSE_BAD_FRAME, f"after must be a non-negative integer up to {MAX_DB_INT}")
        return
    if (refusal := gateway.connections.admit(identity, ws)) is not None:
        await ws.close(CLOSE_LIMIT, refusal)
        return
    structlog.contextvars.bind_contextvars(session_id=session_id, user=user)
    client = _ClientSocket(ws, gateway, user, session_id)
    subscriber = gateway.hub.subscribe(session_id)
    gateway.metrics.connections.labels("client").inc()
    try:
        # A cursor past the end (a stale or made-up one) starts at the end instead
        # of silently swallowing the next events.
        await _serve(client, subscriber, min(int(after_raw), last_seq), last_seq)
    except DATABASE_UNAVAILABLE as error:
        await _unavailable(ws, error, client.last_sent)
    finally:
        gateway.hub.unsubscribe(subscriber)
        gateway.connections.release(ws)
        gateway.metrics.connections.labels("client").dec()


async def _unavailable(ws: WebSocket, error: BaseException, cursor: int | str) -> None:
    """The database went away under the socket: nothing is lost, the client
    comes back (through a balancer, maybe elsewhere) and replays from its cursor."""
    log.warning("ws.database_unavailable", error=str(error)[:200] or type(error).__name__, cursor=cursor)
    with contextlib.suppress(Exception):  # the socket may be gone as well
        await ws.close(CLOSE_UNAVAILABLE, f"database unavailable; reconnect with after={cursor}")


async def _serve(client: _ClientSocket, subscriber: Subscriber, after: int, last_seq: int) -> None:
    ws, settings = client.ws, client.gateway.settings
    tasks: list[asyncio.Task[None]] = []
    try:
        await client.send_model(
            WsHello(
                session_id=client.session_id, after=after, last_seq=last_seq, heartbeat_s=settings.heartbeat_s
            )
        )
        await client.replay(after, last_seq)
        await client.send_model(WsReplayed(last_seq=client.last_sent))
        pump = asyncio.create_task(client.pump(subscriber))
        subscriber.on_overflow = pump.cancel  # the sender stops at once, mid-send if it must
        if subscriber.overflowed.is_set():  # it overflowed during the replay
            pump.cancel()
        tasks = [pump, asyncio.create_task(client.receive())]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if subscriber.overflowed.is_set():
            # The sender is stopped first: an event it was still writing would
            # otherwise follow the cursor named in the close reason.
            await cancel_and_wait(tasks)
            log.warning("ws.slow_consumer", last_sent=client.last_sent)
            await ws.close(CLOSE_SLOW_CONSUMER, f"too slow; reconnect with after={client.last_sent}")
            done = set()
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, WebSocketDisconnect | RuntimeError):
                raise error
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away (RuntimeError: sent after close)
    finally:
        await cancel_and_wait(tasks)
