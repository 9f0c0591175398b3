"""A test runner speaking the runner protocol over a real socket.

Tests use it to play a runner precisely: number events, drop the
connection before acks arrive, resend, ask for approvals.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import websockets
from cmbtask_gateway.auth import RunnerTokens

from .gateway import TEST_SECRET

__all__ = ["TestRunner", "runner_token"]


def runner_token(task_id: str, ttl_s: int = 3600) -> str:
    return RunnerTokens(TEST_SECRET.encode(), ttl_s).issue(task_id)


class TestRunner:
    __test__ = False  # not a test class, despite the name

    def __init__(self, ws_url: str, task_id: str, token: str | None = None) -> None:
        self.url = f"{ws_url}/ws/runner/{task_id}"
        self.task_id = task_id
        self.token = token or runner_token(task_id)
        self.ws: Any = None
        self.welcome: dict[str, Any] = {}
        self.rseq = 0
        self.acked = 0
        self.inbox: list[dict[str, Any]] = []
        #: every numbered frame sent, for resending after a reconnect
        self.sent: dict[int, str] = {}

    async def connect(self, pending_approvals: list[str] | None = None) -> dict[str, Any]:
        self.ws = await websockets.connect(
            self.url, additional_headers={"Authorization": f"Bearer {self.token}"}, open_timeout=10
        )
        await self.ws.send(
            json.dumps({"type": "hello", "pid": 1, "pending_approvals": pending_approvals or []})
        )
        self.welcome = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert self.welcome["type"] == "welcome", self.welcome
        self.acked = self.welcome["acked_rseq"]
        return self.welcome

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def _send_numbered(self, rseq: int, frame: dict[str, Any]) -> None:
        text = json.dumps(frame)
        self.sent[rseq] = text
        await self.ws.send(text)

    async def resend_unacked(self) -> int:
        """Resend what the gateway has not acknowledged (after ``connect``)."""
        numbers = sorted(n for n in self.sent if n > self.acked)
        for number in numbers:
            await self.ws.send(self.sent[number])
        return len(numbers)

    def _next(self) -> int:
        self.rseq += 1
        return self.rseq

    async def send_event(self, event_type: str, data: dict[str, Any], rseq: int | None = None) -> int:
        number = rseq if rseq is not None else self._next()
        await self._send_numbered(
            number, {"type": "event", "rseq": number, "event_type": event_type, "data": data}
        )
        return number

    async def request_approval(self, prompt: str, **fields: Any) -> tuple[int, str]:
        approval_id = fields.pop("approval_id", None) or uuid.uuid4().hex
        number = self._next()
        frame = {
            "type": "approval.request",
            "rseq": number,
            "approval_id": approval_id,
            "prompt": prompt,
            **fields,
        }
        await self._send_numbered(number, frame)
        return number, approval_id

    async def save_state(self, state: dict[str, Any], expected_version: int | None = None) -> int:
        number = self._next()
        frame = {"type": "state.save", "rseq": number, "state": state, "expected_version": expected_version}
        await self._send_numbered(number, frame)
        return number

    async def receive(self, frame_type: str, timeout_s: float = 10.0, **match: Any) -> dict[str, Any]:
        """The next frame of ``frame_type`` (matching ``match``); others are kept."""
        for index, frame in enumerate(self.inbox):
            if frame["type"] == frame_type and all(frame.get(k) == v for k, v in match.items()):
                return self.inbox.pop(index)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no {frame_type} {match} within {timeout_s}s; got {self.inbox[-5:]}")
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), remaining))
            if frame["type"] == "ack":
                self.acked = max(self.acked, frame["rseq"])
            if frame["type"] == frame_type and all(frame.get(k) == v for k, v in match.items()):
                return frame
            self.inbox.append(frame)

    async def wait_acked(self, rseq: int, timeout_s: float = 10.0) -> None:
        while self.acked < rseq:
            await self.receive("ack", timeout_s)
