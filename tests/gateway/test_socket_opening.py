"""An event stored while a client socket is opening reaches it at once.

The socket's first read (owner, ``last_seq``, the backlog's first page) and
its hub subscription are two steps; an event committed between them is in
neither the page nor, unless the subscription came first, the live queue. On
a quiet session nothing later would bring it: an approval request could wait
unseen. The store's opening read is wrapped here to commit one event right
after the read, on the gateway's real store, while a real client connects.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from cmbtask_gateway.store import EventStore, SocketStart

from tests.support.served import served

LATE = "stored while the socket opened"


async def _frames_until_late(ws: Any, timeout_s: float) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline, frames = loop.time() + timeout_s, []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - loop.time())))
        frames.append(frame)
        if frame.get("data", {}).get("text") == LATE:
            return frames


async def test_an_event_stored_between_the_opening_read_and_live_is_sent_once(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = EventStore.opening

    async def opening_then_an_event(
        self: EventStore, session_id: str, after: int, limit: int
    ) -> SocketStart | None:
        start = await original(self, session_id, after, limit)
        async with self.write(session_id) as tx:
            tx.emit("output", {"stream": "stdout", "text": LATE})
        return start

    monkeypatch.setattr(EventStore, "opening", opening_then_an_event)
    async with served(database_url, tmp_path / "data", executor="none") as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            session = (await http.post("/api/sessions", json={"title": "opening"})).json()["id"]
        ws_url = url.replace("http://", "ws://") + f"/ws/sessions/{session}"
        async with websockets.connect(ws_url, open_timeout=10) as ws:
            frames = await _frames_until_late(ws, timeout_s=10)
    hello = frames[0]
    assert hello["type"] == "ws.hello"
    late = [frame for frame in frames if frame.get("data", {}).get("text") == LATE]
    assert len(late) == 1 and late[0]["seq"] == hello["last_seq"] + 1
    seqs = [frame["seq"] for frame in frames if "seq" in frame]
    assert seqs == list(range(1, hello["last_seq"] + 2))
