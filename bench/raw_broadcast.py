"""A minimal raw ``websockets`` broadcast server: the baseline for the gateway.

Same fan-out shape as the gateway's hub — channels, one bounded queue and one
sender task per subscriber, a publisher that never awaits a subscriber's
socket — and nothing else: no validation, no database, no re-serialising
(the publisher's text is forwarded as is). What the gateway delivers per
second, divided by what this delivers on the same machine with the same
clients, is the price of everything the gateway does on top.

Paths: ``/sub/{channel}`` (answers ``{"type":"ready"}`` once registered, then
forwards), ``/pub/{channel}`` (every text frame goes to the channel's
subscribers). Run as its own small process, so that its RSS is its own:

    python bench/raw_broadcast.py QUEUE_SIZE [SQLITE_PATH]

With ``SQLITE_PATH`` it is the *durable* baseline: the least a server that
loses nothing must do on top. Every published message is inserted into
SQLite and committed before any subscriber gets it, in one writer thread
that takes everything pending per commit (the gateway's WAL and
``synchronous=NORMAL``), and each publisher gets one ack per commit for its
messages in it. No parsing, no validation, no numbering in the database
(the seqs are counted in memory): a floor for the gateway's cost per event,
not a rival implementation.

prints the port it listens on and serves until its standard input closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sqlite3
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["main"]

CLOSE_SLOW_CONSUMER = 4408


class _Subscriber:
    def __init__(self, queue_size: int) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.overflowed = asyncio.Event()


class _Durable:
    """Commit before forwarding, ack after the commit: one writer thread."""

    def __init__(self, path: str, forward: Callable[[str, str], None]) -> None:
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
            self._connection.execute(f"PRAGMA {pragma}")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS messages"
            " (channel TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (channel, seq))"
        )
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        self._forward = forward
        self._pending: list[tuple[str, str, ServerConnection]] = []
        self._wake = asyncio.Event()
        self._seqs: Counter[str] = Counter()

    def submit(self, channel: str, message: str, publisher: ServerConnection) -> None:
        self._pending.append((channel, message, publisher))
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            group, self._pending = self._pending, []
            rows = []
            for channel, message, _ in group:
                self._seqs[channel] += 1
                rows.append((channel, self._seqs[channel], message))
            await loop.run_in_executor(self._thread, self._commit, rows)
            for channel, message, _ in group:
                self._forward(channel, message)
            for publisher, count in Counter(publisher for _, _, publisher in group).items():
                with contextlib.suppress(ConnectionClosed):
                    await publisher.send(f'{{"type":"ack","count":{count}}}')

    def _commit(self, rows: list[tuple[str, int, str]]) -> None:
        self._connection.execute("BEGIN")
        self._connection.executemany("INSERT INTO messages VALUES (?, ?, ?)", rows)
        self._connection.execute("COMMIT")


class _Broadcast:
    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.channels: defaultdict[str, set[_Subscriber]] = defaultdict(set)
        self.durable: _Durable | None = None

    async def handle(self, ws: ServerConnection) -> None:
        kind, _, channel = ws.request.path.strip("/").partition("/") if ws.request else ("", "", "")
        if kind == "pub":
            await self._publish_from(ws, channel)
        elif kind == "sub":
            await self._subscribe(ws, channel)
        else:
            await ws.close(4404, "unknown path")

    async def _publish_from(self, ws: ServerConnection, channel: str) -> None:
        async for message in ws:
            if self.durable is not None:
                self.durable.submit(channel, str(message), ws)
            else:
                self.forward(channel, str(message))

    def forward(self, channel: str, message: str) -> None:
        for subscriber in tuple(self.channels.get(channel, ())):
            if subscriber.overflowed.is_set():
                continue
            try:
                subscriber.queue.put_nowait(message)
            except asyncio.QueueFull:
                subscriber.overflowed.set()

    async def _subscribe(self, ws: ServerConnection, channel: str) -> None:
        subscriber = _Subscriber(self.queue_size)
        self.channels[channel].add(subscriber)
        await ws.send('{"type":"ready"}')
        sender = asyncio.create_task(self._send_to(ws, subscriber))
        overflow = asyncio.create_task(subscriber.overflowed.wait())
        closed = asyncio.create_task(ws.wait_closed())
        try:
            await asyncio.wait([sender, overflow, closed], return_when=asyncio.FIRST_COMPLETED)
            if subscriber.overflowed.is_set():
                await ws.close(CLOSE_SLOW_CONSUMER, "too slow")
        finally:
            self.channels[channel].discard(subscriber)
            for task in (sender, overflow, closed):
                task.cancel()
            await asyncio.gather(sender, overflow, closed, return_exceptions=True)

    @staticmethod
    async def _send_to(ws: ServerConnection, subscriber: _Subscriber) -> None:
        while True:
            await ws.send(await subscriber.queue.get())


async def _serve(queue_size: int, sqlite_path: str | None) -> None:
    broadcast = _Broadcast(queue_size)
    writer = None
    if sqlite_path is not None:
        broadcast.durable = _Durable(sqlite_path, broadcast.forward)
        writer = asyncio.create_task(broadcast.durable.run())
    async with serve(
        broadcast.handle, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None, backlog=4096
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(port, flush=True)
        # Serve until the parent closes our stdin (or goes away).
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if writer is not None:
        writer.cancel()


def main() -> None:
    queue_size = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
    sqlite_path = sys.argv[2] if len(sys.argv) > 2 else None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    try:
        import uvloop

        uvloop.run(_serve(queue_size, sqlite_path))
    except ImportError:
        asyncio.run(_serve(queue_size, sqlite_path))


if __name__ == "__main__":
    main()
