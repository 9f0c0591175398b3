"""The client socket's sender, on a real store: live events that reach the
hub out of ``seq`` order are still sent once each, in order.

They do reach it out of order: a replica hears of its own stores at once and
of another replica's through a NOTIFY that may come later, and two writers in
one process may publish in the order their commits return, not their seqs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cmbtask_gateway.api.ws_client import _ClientSocket
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.hub import Delivery, Poke
from cmbtask_protocol import SessionCreate


class _Socket:
    def __init__(self, total: int) -> None:
        self.sent: list[int] = []
        self.total = total
        self.all_sent = asyncio.Event()

    async def send_text(self, text: str) -> None:
        frame = json.loads(text)
        if "seq" in frame:
            self.sent.append(frame["seq"])
        if len(self.sent) >= self.total:
            self.all_sent.set()

    async def _send(self, message: dict[str, Any]) -> None:
        """The ASGI ``send`` under Starlette's wrapper: what the sender uses for events."""
        assert message["type"] == "websocket.send"
        await self.send_text(message["text"])


@pytest.fixture
def gateway(built_gateway: Gateway) -> Gateway:
    return built_gateway


async def _store(gateway: Gateway, session_id: str, count: int) -> list[Delivery]:
    """Store ``count`` events; return what the hub was handed, in order."""
    subscriber = gateway.hub.subscribe(session_id)
    for n in range(count):
        async with gateway.store.write(session_id) as tx:
            tx.emit("output", {"stream": "stdout", "text": f"line {n}"})
    gateway.hub.unsubscribe(subscriber)
    return [subscriber.queue.get_nowait() for _ in range(subscriber.queue.qsize())]


async def _pump(gateway: Gateway, session_id: str, items: list[Delivery], total: int) -> list[int]:
    socket = _Socket(total)
    client = _ClientSocket(socket, gateway, "alice", session_id)  # type: ignore[arg-type]
    subscriber = gateway.hub.subscribe(session_id)
    for item in items:
        subscriber.queue.put_nowait(item)
    pump = asyncio.create_task(client.pump(subscriber))
    try:
        await asyncio.wait_for(socket.all_sent.wait(), 10)
        await asyncio.sleep(0.2)  # a repeat would follow the last one
    finally:
        pump.cancel()
        gateway.hub.unsubscribe(subscriber)
    return socket.sent


async def test_a_later_event_first_fills_the_gap_and_nothing_twice(gateway: Gateway) -> None:
    session = await gateway.sessions.create("alice", SessionCreate(title="pump"))
    stored = await _store(gateway, session.id, 6)
    # seq 3 and 4 were stored elsewhere; 5 arrives before their poke.
    arrived = [stored[0], stored[1], stored[4], stored[2], stored[3], stored[5]]
    assert await _pump(gateway, session.id, arrived, 6) == [1, 2, 3, 4, 5, 6]


async def test_a_poke_reads_only_up_to_its_seq(gateway: Gateway) -> None:
    session = await gateway.sessions.create("alice", SessionCreate(title="pump"))
    stored = await _store(gateway, session.id, 5)
    items = [stored[2], stored[3], stored[4]]
    # the poke first (replays 1..2), then the live 3..5
    assert await _pump(gateway, session.id, [Poke(2), *items], 5) == [1, 2, 3, 4, 5]
