"""What the socket fuzz tests share: frame mutations from a seeded RNG, a
well-behaved bystander, and the gateway's counters a leak would move."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from typing import Any

import httpx
import psutil
import websockets
from sqlalchemy import create_engine, text

from .gateway import GatewayProcess
from .runner_client import TestRunner

__all__ = ["Bystander", "baseline", "event_rows", "gauges", "mutate", "settled"]

_ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63,
    10**30,
    1.5e308,
    "",
    "x" * 1000,
    "\u0000\ud7ff\ufffd",
    [],
    [1, [2, [3]]],
    {},
    {"nested": {"deeper": [None]}},
]


def _mutate_value(rng: random.Random, value: Any) -> Any:
    if isinstance(value, dict) and value and rng.random() < 0.6:
        key = rng.choice(sorted(value))
        value[key] = _mutate_value(rng, value[key])
        return value
    return copy.deepcopy(rng.choice(_ODD_VALUES))


def mutate(rng: random.Random, frame: dict[str, Any]) -> str:
    """One frame made wrong in one of several ways, as text."""
    frame = copy.deepcopy(frame)
    how = rng.randrange(8)
    keys = sorted(frame)
    if how == 0 and keys:
        del frame[rng.choice(keys)]
    elif how == 1:
        frame[f"extra_{rng.randrange(100)}"] = rng.choice(_ODD_VALUES)
    elif how == 2 and keys:
        key = rng.choice(keys)
        frame[key] = _mutate_value(rng, frame[key])
    elif how == 3:
        encoded = json.dumps(frame)
        return encoded[: rng.randrange(len(encoded))]  # cut short
    elif how == 4:
        encoded = bytearray(json.dumps(frame).encode())
        for _ in range(3):
            encoded[rng.randrange(len(encoded))] = rng.randrange(32, 127)
        return encoded.decode()
    elif how == 5:
        return json.dumps(rng.choice([[frame], "frame", 42, None, [[[[[]]]]]]))
    elif how == 6:
        return "[" * 5000 + "]" * 5000  # deep nesting
    else:
        frame["type"] = rng.choice(["", "PING", "submit", "event ", "hello\u0000", 7])
    return json.dumps(frame)


def gauges(gateway: GatewayProcess) -> dict[str, float]:
    """The gateway process's open sockets on its own port (not the database
    pool, which may grow and stay), then its asyncio tasks and socket gauges."""
    assert gateway.process is not None
    # Counted before this call's own /metrics request opens a connection.
    connections = psutil.Process(gateway.process.pid).net_connections(kind="tcp")
    mine = [c for c in connections if c.laddr and c.laddr.port == gateway.port]
    values: dict[str, float] = {"sockets": sum(1 for c in mine if c.status != psutil.CONN_LISTEN)}
    with httpx.Client(timeout=10, headers={"Connection": "close"}) as http:
        metrics = http.get(f"{gateway.url}/metrics").text
    for line in metrics.splitlines():
        if line.startswith(("cmbtask_asyncio_tasks ", "cmbtask_ws_connections{")):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


async def baseline(gateway: GatewayProcess) -> dict[str, float]:
    """The counters once two readings in a row agree (a request that just
    ended may still hold its socket for a moment)."""
    previous = await asyncio.to_thread(gauges, gateway)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = await asyncio.to_thread(gauges, gateway)
        if now == previous:
            return now
        previous = now
    raise AssertionError(f"the gateway's counters never settled: {previous}")


async def settled(gateway: GatewayProcess, baseline: dict[str, float], timeout_s: float = 30.0) -> None:
    """Wait until every counter is back at the baseline (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    now = await asyncio.to_thread(gauges, gateway)
    while now != baseline and loop.time() < deadline:
        await asyncio.sleep(0.5)
        now = await asyncio.to_thread(gauges, gateway)
    assert now == baseline, f"not back to where it was: {now} != {baseline}"


def event_rows(database_url: str) -> dict[int, tuple[Any, ...]]:
    """Every stored event, read from the database itself, by row id."""
    url = database_url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg2")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, session_id, seq, task_id, rseq, type, ts, data FROM events")
            )
            return {row[0]: tuple(str(value) for value in row) for row in rows}
    finally:
        engine.dispose()


class Bystander:
    """A well-behaved client and runner on a session of their own: the runner
    publishes, the client must receive every event, in order, during a fuzz."""

    def __init__(self, gateway: GatewayProcess, session_id: str, task_id: str) -> None:
        self.gateway = gateway
        self.session_id = session_id
        self.runner = TestRunner(gateway.ws_url, task_id)
        self.seqs: list[int] = []
        self.ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, gateway: GatewayProcess) -> Bystander:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            session_id = (await http.post("/api/sessions", json={"title": "bystander"})).json()["id"]
            task = await http.post(f"/api/sessions/{session_id}/tasks", json={"engine": "demo"})
        bystander = cls(gateway, session_id, task.json()["id"])
        bystander.ws = await websockets.connect(
            f"{gateway.ws_url}/ws/sessions/{session_id}", open_timeout=15, max_size=None
        )
        bystander._reader = asyncio.create_task(bystander._read())
        await bystander.runner.connect()
        return bystander

    async def _read(self) -> None:
        async for message in self.ws:
            frame = json.loads(message)
            if "seq" in frame:
                self.seqs.append(frame["seq"])

    async def publish(self, count: int, pause_s: float = 0.01, size: int = 64) -> None:
        for _ in range(count):
            await self.runner.send_event("output", {"stream": "stdout", "text": "b" * size})
            await asyncio.sleep(pause_s)
        await self.runner.wait_acked(self.runner.rseq, timeout_s=60)

    async def received_everything(self, timeout_s: float = 30.0) -> None:
        """Every event of the session, in order, once: task.queued (1) and
        then one per runner frame."""
        last = self.runner.rseq + 1
        for _ in range(int(timeout_s * 10)):
            if self.seqs and self.seqs[-1] >= last:
                break
            await asyncio.sleep(0.1)
        assert self.seqs == list(range(1, last + 1)), self.seqs[-20:]
