"""The runner's resilient connection to the gateway's ``/ws/runner/{task_id}``.

The gateway may restart at any moment (upgrades, crashes) while tasks keep
running, so the link never assumes a connection lasts: it reconnects with
exponential backoff and jitter, says ``hello`` (with the approvals it still
waits for), learns from ``welcome`` what the gateway already holds, and
resends everything above that from the :class:`~cmbtask_runner.outbox.Outbox`.
Only close codes that no retry can fix (bad token, unknown task, replaced by
a newer connection) end it, with :class:`LinkFatal`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

import structlog
from cmbtask_protocol import (
    CLOSE_AUTH,
    CLOSE_CONFLICT,
    CLOSE_NOT_FOUND,
    MAX_RUNNER_FRAME_BYTES,
    RunnerAck,
    RunnerApprovalDecision,
    RunnerCancel,
    RunnerError,
    RunnerInbound,
    RunnerStateResult,
    RunnerWelcome,
)
from pydantic import TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .outbox import Outbox

__all__ = ["Backoff", "Inbound", "Link", "LinkFatal", "runner_ws_url"]

log = structlog.get_logger("cmbtask_runner.link")

_INBOUND: TypeAdapter[Any] = TypeAdapter(RunnerInbound)
_FATAL_CLOSE = {
    CLOSE_AUTH: "the gateway refused the task token",
    CLOSE_NOT_FOUND: "the gateway does not know this task",
    CLOSE_CONFLICT: "a newer runner connection replaced this one",
}
_FATAL_STATUS = {401: CLOSE_AUTH, 403: CLOSE_AUTH, 404: CLOSE_NOT_FOUND}


class LinkFatal(Exception):
    """The link cannot go on; retrying would not help."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (code {code})")
        self.code = code
        self.reason = reason


def runner_ws_url(gateway_url: str, task_id: str) -> str:
    """``http://h:p`` (or ``ws://h:p``) plus the runner path, as a ``ws(s)://`` URL."""
    base = gateway_url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    return f"{base}/ws/runner/{task_id}"


class Backoff:
    """Exponential delays with jitter, so that many runners orphaned by one
    gateway restart do not all knock at the same instant."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.first_s * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 30)
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


#: What the gateway says that the task must hear, in arrival order, on the
#: link's inbound queue (acks and errors the link handles itself).
Inbound = RunnerWelcome | RunnerApprovalDecision | RunnerStateResult | RunnerCancel


class Link:
    def __init__(
        self,
        *,
        gateway_url: str,
        task_id: str,
        token: str,
        outbox: Outbox,
        inbound: asyncio.Queue[Inbound],
        pending_approvals: Callable[[], list[str]],
        pid: int,
        host: str,
        give_up_s: float = 900.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = runner_ws_url(gateway_url, task_id)
        self._token = token
        self._outbox = outbox
        self._inbound = inbound
        self._pending_approvals = pending_approvals
        self._hello = {"type": "hello", "pid": pid, "host": host}
        self._give_up_s = give_up_s
        self._backoff = backoff or Backoff()
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self._closing = False
        self._ws: ClientConnection | None = None
        #: when the gateway was last seen (None while connected)
        self._down_since: float | None = time.monotonic()
        self.connects = 0

    # ---- called from any thread / the runner ---------------------------------------

    def wake(self) -> None:
        """New frames are in the outbox (call from the event loop thread)."""
        self._wake.set()

    async def wait_acked(self, rseq: int, timeout_s: float) -> bool:
        """Wait until the gateway holds every frame up to ``rseq``."""
        deadline = time.monotonic() + timeout_s
        while self._outbox.acked < rseq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._acked.clear()
            if self._outbox.acked >= rseq:
                break
            try:
                await asyncio.wait_for(self._acked.wait(), timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
        return True

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._ws is not None:
            await self._ws.close(1000, "runner done")

    # ---- the connection loop ----------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until :meth:`close`; raise :class:`LinkFatal` when hopeless."""
        while not self._closing:
            try:
                await self._session()
            except LinkFatal:
                raise
            except (OSError, ConnectionClosed, InvalidStatus, TimeoutError, ValidationError) as exc:
                self._check_fatal(exc)
                log.info("link.down", error=_describe(exc), pending=self._outbox.pending)
            if self._closing:
                return
            if self._down_since is None:
                self._down_since = time.monotonic()
            if time.monotonic() - self._down_since > self._give_up_s:
                raise LinkFatal(1006, f"gateway unreachable for over {self._give_up_s:.0f} s")
            await asyncio.sleep(self._backoff.next_delay())

    def _check_fatal(self, exc: BaseException) -> None:
        if isinstance(exc, InvalidStatus):
            code = _FATAL_STATUS.get(exc.response.status_code)
            if code is not None:
                raise LinkFatal(code, _FATAL_CLOSE[code]) from exc
        if isinstance(exc, ConnectionClosed) and exc.rcvd is not None and exc.rcvd.code in _FATAL_CLOSE:
            said = f" ({exc.rcvd.reason})" if exc.rcvd.reason else ""
            raise LinkFatal(exc.rcvd.code, _FATAL_CLOSE[exc.rcvd.code] + said) from exc

    async def _session(self) -> None:
        async with connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self._token}"},
            proxy=None,
            compression=None,
            max_size=MAX_RUNNER_FRAME_BYTES,
            open_timeout=10,
            ping_interval=10,
            ping_timeout=30,
            close_timeout=2,
        ) as ws:
            self._ws = ws
            try:
                sent = await self._handshake(ws)
                await self._pump(ws, sent)
            finally:
                self._ws = None

    async def _handshake(self, ws: ClientConnection) -> int:
        hello = {**self._hello, "pending_approvals": self._pending_approvals()}
        await ws.send(json.dumps(hello))
        frame = _INBOUND.validate_json(await asyncio.wait_for(ws.recv(), timeout=15))
        if isinstance(frame, RunnerError):
            raise LinkFatal(CLOSE_NOT_FOUND, f"gateway refused hello: {frame.code}: {frame.message}")
        if not isinstance(frame, RunnerWelcome):
            raise LinkFatal(4400, f"expected welcome, got {frame.type}")
        self.connects += 1
        self._down_since = None
        self._backoff.reset()
        self._outbox.continue_after(frame.acked_rseq)
        self._outbox.ack(frame.acked_rseq)
        self._acked.set()
        self._inbound.put_nowait(frame)
        log.info(
            "link.welcome", connects=self.connects, acked_rseq=frame.acked_rseq, pending=self._outbox.pending
        )
        return max(frame.acked_rseq, self._outbox.acked)

    async def _pump(self, ws: ClientConnection, sent: int) -> None:
        sender = asyncio.create_task(self._send_loop(ws, sent))
        try:
            await self._recv_loop(ws)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _send_loop(self, ws: ClientConnection, sent: int) -> None:
        while True:
            self._wake.clear()
            frames = self._outbox.frames_after(sent)
            if not frames:
                if self._closing:
                    return
                await self._wake.wait()
                continue
            for frame in frames:
                await ws.send(json.dumps(frame, separators=(",", ":"), default=str))
                sent = int(frame["rseq"])

    async def _recv_loop(self, ws: ClientConnection) -> None:
        async for raw in ws:
            try:
                frame = _INBOUND.validate_json(raw)
            except ValidationError as exc:
                log.warning("link.bad_frame", error=str(exc)[:500])
                continue
            self._dispatch(frame)
        # A clean close by the gateway (e.g. 1001 on shutdown) still means: reconnect.
        raise ws.close_exc

    def _dispatch(self, frame: Any) -> None:
        if isinstance(frame, RunnerAck):
            self._outbox.ack(frame.rseq)
            self._acked.set()
            self._wake.set()  # acks make room in the window: more frames may go out
        elif isinstance(frame, RunnerError):
            log.warning("link.gateway_error", code=frame.code, message=frame.message)
        else:
            self._inbound.put_nowait(frame)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        return f"closed with code {code}"
    return f"{type(exc).__name__}: {exc}"[:300]
