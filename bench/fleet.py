"""The subscriber side of the fan-out benchmark, run in a process of its own.

Hundreds of WebSocket clients in one asyncio loop, each subscribed to one
channel (a gateway session, or a channel of the raw baseline server). Every
message they expect carries ``data.ch`` (its channel), ``data.phase``,
``data.i`` (its number within the phase) and ``data.sent`` (the publisher's
``time.time()``), so each client counts what is missing, duplicated or from
another channel, and the latency from publisher to subscriber.

It runs apart from the publishers so that the two do not share one event
loop; the parent talks to it over a ``multiprocessing`` pipe:
fleet → parent ``("connected", report)``, parent → fleet ``("drain", grace_s)``,
fleet → parent ``("result", report)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import connect

__all__ = ["FleetSpec", "run_fleet"]

READY_TYPES = {"ws.replayed", "ready"}


@dataclass
class FleetSpec:
    #: (url, channel) for each client
    clients: list[tuple[str, str]]
    #: how many messages each client expects, per phase
    expected: dict[str, int]
    timeout_s: float


@dataclass
class _Phase:
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    next_i: int = 0
    last_recv: float = 0.0
    latencies: list[float] = field(default_factory=list)


@dataclass
class _Client:
    url: str
    channel: str
    expected: dict[str, int]
    phases: dict[str, _Phase] = field(default_factory=dict)
    misrouted: int = 0
    connect_s: float | None = None
    error: str | None = None
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    #: set once connected and registered, or once connecting failed
    live: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, frame: dict[str, Any], now: float) -> None:
        data = frame.get("data") or {}
        if frame.get("session_id") != self.channel or data.get("ch") != self.channel:
            self.misrouted += 1
            return
        phase = self.phases.setdefault(data["phase"], _Phase())
        number = data["i"]
        if number < phase.next_i:
            phase.duplicated += 1
            return
        phase.lost += number - phase.next_i  # a gap: counted now, in case nothing fills it
        phase.next_i = number + 1
        phase.received += 1
        phase.last_recv = now
        phase.latencies.append(now - data["sent"])
        if all(self.phases.get(name, _Phase()).next_i >= count for name, count in self.expected.items()):
            self.complete.set()


async def _connect(client: _Client) -> Any:
    started = time.perf_counter()
    ws = await connect(client.url, compression=None, max_size=None, open_timeout=60, ping_interval=None)
    # Live means "the server has registered this subscriber": the gateway's
    # ws.replayed frame, or the raw server's ready frame.
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if frame.get("type") in READY_TYPES:
            break
    client.connect_s = time.perf_counter() - started
    client.live.set()
    return ws


async def _serve_client(client: _Client) -> None:
    try:
        ws = await _connect(client)
    except Exception as error:
        client.error = f"connect: {type(error).__name__}: {error}"
        client.live.set()
        client.complete.set()
        return
    try:
        async for raw in ws:
            now = time.time()
            frame = json.loads(raw)
            if "data" in frame and "seq" in frame:
                client.take(frame, now)
    except Exception as error:
        client.error = f"receive: {type(error).__name__}: {error}"
    finally:
        if ws.close_code not in (None, 1000) and client.error is None:
            client.error = f"closed by server: {ws.close_code} {ws.close_reason}"
        client.complete.set()
        with contextlib.suppress(Exception):
            await ws.close()


def _report(clients: list[_Client]) -> dict[str, Any]:
    phases: dict[str, dict[str, Any]] = {}
    for client in clients:
        for name, count in client.expected.items():
            phase = client.phases.get(name, _Phase())
            total = phases.setdefault(
                name, {"received": 0, "lost": 0, "duplicated": 0, "last_recv": 0.0, "latencies": []}
            )
            total["received"] += phase.received
            # whatever never arrived, including the tail after the last message seen
            total["lost"] += count - phase.received
            total["duplicated"] += phase.duplicated
            total["last_recv"] = max(total["last_recv"], phase.last_recv)
            total["latencies"].extend(phase.latencies)
    errors = [client.error for client in clients if client.error]
    return {
        "phases": phases,
        "misrouted": sum(client.misrouted for client in clients),
        "errors": len(errors),
        "first_errors": errors[:5],
    }


async def _fleet(spec: FleetSpec, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    clients = [_Client(url, channel, spec.expected) for url, channel in spec.clients]
    runners = [asyncio.create_task(_serve_client(client)) for client in clients]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.live.wait() for c in clients)), spec.timeout_s)
    conn.send(
        (
            "connected",
            {
                "connect_s": [c.connect_s for c in clients if c.connect_s is not None],
                "errors": [c.error for c in clients if c.error][:5],
                "failed": sum(1 for c in clients if c.connect_s is None),
            },
        )
    )
    everyone_done = asyncio.gather(*(client.complete.wait() for client in clients))
    message = await loop.run_in_executor(None, conn.recv)
    grace_s = float(message[1]) if message[0] == "drain" else 0.0
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(everyone_done, grace_s)
    for task in runners:
        task.cancel()
    await asyncio.gather(*runners, return_exceptions=True)
    conn.send(("result", _report(clients)))


def run_fleet(spec: FleetSpec, conn: Connection) -> None:
    """Process entry point (``multiprocessing`` target)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    try:
        import uvloop

        uvloop.run(_fleet(spec, conn))
    except ImportError:
        asyncio.run(_fleet(spec, conn))
