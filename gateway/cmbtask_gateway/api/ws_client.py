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
from ..errors import GatewayError, NotFound
from ..hub import Beat, Delivery, Poke, Stored, Subscriber
from ..inbox import Inbox
from ..logs import get_logger
from ..store import SocketStart
from ..wire_frames import DirectFrames, text_frame
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
        self._send = ws._send  # the ASGI send under Starlette's wrapper: see send_text
        self._frames = DirectFrames(self._send)

    async def send_model(self, frame: Any) -> None:
        await self.write_text(frame.model_dump_json(exclude_none=True))

    async def write_text(self, text: str) -> None:
        """Straight to the transport when it takes the frame now (``wire_frames``),
        else through ``send``: the hello, the replay and the heartbeats cost a
        connecting socket what a live event costs an open one."""
        if not (self._frames.available and self._frames.write(text_frame(text))):
            await self.send_text(text)

    async def replay(self, after: int, until: int, first: list[dict[str, Any]] | None = None) -> None:
        """Send stored events in ``(after, until]`` page by page, starting with
        ``first`` when the caller has read the first page already.

        Never past ``until``: the pump fills a gap up to the event it is about
        to send, and an unbounded page sent that event (and more) twice."""
        self.last_sent = after
        page_size = self.gateway.settings.replay_page_size
        while self.last_sent < until:
            if first is not None:
                page, first = first, None
            else:
                page = await self.gateway.store.page(self.session_id, self.last_sent, page_size, until=until)
            if not page:
                break
            for item in page:
                await self.write_text(jsontext.dumps(item))
                # Per event: a sender cancelled mid-page still knows its cursor.
                self.last_sent = item["seq"]
            self.gateway.metrics.events_out.inc(len(page))

    async def send_text(self, text: str) -> None:
        """One frame through the ASGI ``send`` itself: Starlette's ``send_text``
        adds a state check and a coroutine per frame (a fifth of a send's CPU,
        measured). Its state still tracks the close, which goes through it."""
        try:
            await self._send({"type": "websocket.send", "text": text})
        except OSError:  # what Starlette's send turns into a disconnect too
            raise WebSocketDisconnect(1006) from None

    async def pump(self, subscriber: Subscriber) -> None:
        """Live events in order; fill any gap from the database."""
        queue, events_out = subscriber.queue, self.gateway.metrics.events_out
        heartbeat = _Heartbeat(queue, self.gateway.settings.heartbeat_s)
        try:
            while True:
                item = await queue.get()
                heartbeat.active_at = heartbeat.clock()
                if isinstance(item, Stored):
                    if item.seq <= self.last_sent:
                        continue
                    if item.seq > self.last_sent + 1:
                        await self.replay(self.last_sent, item.seq - 1)
                    if not self._frames.write(item.frame):
                        await self.send_text(item.text)
                    self.last_sent = item.seq
                    events_out.inc()
                elif isinstance(item, Poke):  # another replica stored these: read them
                    if item.last_seq > self.last_sent:
                        await self.replay(self.last_sent, item.last_seq)
                else:
                    await self.send_model(WsHeartbeat(last_seq=self.last_sent))
        finally:
            heartbeat.cancel()

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


class _Heartbeat:
    """Queues a ``Beat`` when the socket has sent nothing for ``interval``.

    One timer per socket, moved only when it fires: a timeout around every
    wait for the queue (a timer armed and cancelled per event) cost more CPU
    per delivery than the send itself."""

    #: a timer may fire this early (the loop's clock resolution)
    _SLACK = 0.01

    def __init__(self, queue: Inbox[Delivery], interval: float) -> None:
        loop = asyncio.get_running_loop()
        self.clock = loop.time
        self._loop, self._queue, self._interval = loop, queue, interval
        #: when the socket last had something to do; the pump sets it
        self.active_at = self.clock()
        self._timer = loop.call_at(self.active_at + interval, self._fire)

    def _fire(self) -> None:
        now, due = self.clock(), self.active_at + self._interval
        if now >= due - self._SLACK:
            self._queue.put_nowait(Beat())
            self.active_at, due = now, now + self._interval
        self._timer = self._loop.call_at(due, self._fire)

    def cancel(self) -> None:
        self._timer.cancel()


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
    # Subscribed before the opening read: an event stored while it runs is
    # queued here rather than missed (the pump drops what the replay sent). A
    # socket that is then refused only ever held events it never sends.
    subscriber = gateway.hub.subscribe(session_id)
    try:
        await _open_and_serve(ws, gateway, session_id, subscriber)
    finally:
        gateway.hub.unsubscribe(subscriber)


async def _open_and_serve(ws: WebSocket, gateway: Gateway, session_id: str, subscriber: Subscriber) -> None:
    after = _cursor(ws.query_params.get("after", "0"))
    try:
        identity = await identity_for_connection(ws)
        user = identity.user
        # One read: the owner, last_seq and the backlog's first page.
        page_size = gateway.settings.replay_page_size if after is not None else 0
        start = await gateway.store.opening(session_id, after or 0, page_size)
        if start is None or start.owner != user:
            raise NotFound(f"session {session_id} not found")
    except GatewayError as error:
        code = CLOSE_AUTH if error.status_code == 401 else CLOSE_NOT_FOUND
        await ws.close(code, error.message)
        return
    except DATABASE_UNAVAILABLE as error:
        await _unavailable(ws, error, ws.query_params.get("after", "0")[:20])
        return
    if after is None:
        await ws.close(CLOSE_BAD_FRAME, f"after must be a non-negative integer up to {MAX_DB_INT}")
        return
    if (refusal := gateway.connections.admit(identity, ws)) is not None:
        await ws.close(CLOSE_LIMIT, refusal)
        return
    structlog.contextvars.bind_contextvars(session_id=session_id, user=user)
    client = _ClientSocket(ws, gateway, user, session_id)
    gateway.metrics.connections.labels("client").inc()
    try:
        # A cursor past the end (a stale or made-up one) starts at the end instead
        # of silently swallowing the next events.
        await _serve(client, subscriber, min(after, start.last_seq), start)
    except DATABASE_UNAVAILABLE as error:
        await _unavailable(ws, error, client.last_sent)
    finally:
        gateway.connections.release(ws)
        gateway.metrics.connections.labels("client").dec()


async def _unavailable(ws: WebSocket, error: BaseException, cursor: int | str) -> None:
    """The database went away under the socket: nothing is lost, the client
    comes back (through a balancer, maybe elsewhere) and replays from its cursor."""
    log.warning("ws.database_unavailable", error=str(error)[:200] or type(error).__name__, cursor=cursor)
    with contextlib.suppress(Exception):  # the socket may be gone as well
        await ws.close(CLOSE_UNAVAILABLE, f"database unavailable; reconnect with after={cursor}")


def _cursor(after_raw: str) -> int | None:
    """``?after=N`` as a number, or None when it is not one the database can hold."""
    # isdigit alone takes "²" and 5,000-digit numbers, which int() refuses
    valid = after_raw.isascii() and after_raw.isdigit() and len(after_raw) <= len(str(MAX_DB_INT))
    return int(after_raw) if valid and int(after_raw) <= MAX_DB_INT else None


async def _serve(client: _ClientSocket, subscriber: Subscriber, after: int, start: SocketStart) -> None:
    ws, settings, last_seq = client.ws, client.gateway.settings, start.last_seq
    tasks: list[asyncio.Task[None]] = []
    try:
        await client.send_model(
            WsHello(
                session_id=client.session_id, after=after, last_seq=last_seq, heartbeat_s=settings.heartbeat_s
            )
        )
        await client.replay(after, last_seq, start.page)
        await client.send_model(WsReplayed(last_seq=client.last_sent))
        pump = asyncio.create_task(client.pump(subscriber))
        subscriber.on_overflow = pump.cancel  # the sender stops at once, mid-send if it must
        if subscriber.overflowed:  # it overflowed during the replay
            pump.cancel()
        tasks = [pump, asyncio.create_task(client.receive())]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if subscriber.overflowed:
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
