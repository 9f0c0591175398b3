"""A session client that rides out failures, as the web UI does.

It connects through the balancer, keeps every frame it is sent (a repeat is
kept too: the test must see it), and after any drop reconnects with
``?after=<last seq it holds>``, wherever the balancer sends it. Each outage
is recorded: when the connection dropped and when the first event it had not
seen arrived, on whichever replica, so a test can tell how long recovery took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

__all__ = ["Outage", "RoamingClient"]


@dataclass
class Outage:
    dropped_at: float
    #: when a gateway said hello on the connection that followed
    hello_at: float | None = None
    #: when the first new event arrived after the drop (None: not yet)
    resumed_at: float | None = None
    #: failed connection attempts before one held
    attempts: int = 0


class RoamingClient:
    def __init__(self, ws_url: str, session_id: str) -> None:
        self.base = f"{ws_url}/ws/sessions/{session_id}"
        self.session_id = session_id
        self.events: list[dict[str, Any]] = []
        self.hellos: list[dict[str, Any]] = []
        self.outages: list[Outage] = []
        self.connected = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def last_seq(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"client-{self.session_id[:8]}")

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                await self._session()
            if self._stopping:
                return
            self.connected.clear()
            outage = self.outages[-1] if self.outages and self.outages[-1].resumed_at is None else None
            if outage is None:
                self.outages.append(Outage(time.monotonic()))
            else:
                outage.attempts += 1
            # Jittered, short: a client of a dead replica should be back within
            # a second, without all of them knocking in the same millisecond.
            await asyncio.sleep(random.uniform(0.05, 0.3))

    async def _session(self) -> None:
        url = f"{self.base}?after={self.last_seq}"
        async with connect(url, open_timeout=10, max_size=None, close_timeout=2) as ws:
            self._ws = ws
            try:
                async for raw in ws:
                    self._receive(json.loads(raw))
            finally:
                self._ws = None

    def _receive(self, frame: dict[str, Any]) -> None:
        if "seq" not in frame:
            if frame.get("type") == "ws.hello":
                self.hellos.append(frame)
                self.connected.set()
                if self.outages and self.outages[-1].hello_at is None:
                    self.outages[-1].hello_at = time.monotonic()
            return
        if self.outages and self.outages[-1].resumed_at is None and frame["seq"] > self.last_seq:
            self.outages[-1].resumed_at = time.monotonic()
        self.events.append(frame)

    async def wait_for_seq(self, seq: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.last_seq < seq:
            if time.monotonic() > deadline:
                raise TimeoutError(f"client of {self.session_id} at seq {self.last_seq}, not {seq}")
            await asyncio.sleep(0.05)
