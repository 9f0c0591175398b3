"""A session-socket client for tests that records every frame it receives."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

__all__ = ["SessionClient"]


class SessionClient:
    def __init__(self, ws_url: str, session_id: str, token: str | None = None) -> None:
        self.base = f"{ws_url}/ws/sessions/{session_id}"
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.control: list[dict[str, Any]] = []
        self.ws: Any = None

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    async def connect(self, after: int | None = None) -> None:
        query = f"?after={self.last_seq if after is None else after}"
        if self.token:
            query += f"&token={self.token}"
        self.ws = await websockets.connect(self.base + query, open_timeout=15, max_size=None)

    async def read_until(self, done: Any, timeout_s: float = 30.0) -> None:
        """Read frames until ``done(self)`` is true (bounded by ``timeout_s``)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not done(self):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"gave up after {timeout_s}s with {len(self.events)} events")
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), remaining))
            (self.events if "seq" in frame else self.control).append(frame)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == event_type]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
