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

    python bench/raw_broadcast.py QUEUE_SIZE

prints the port it listens on and serves until its standard input closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
from collections import defaultdict

from websockets.asyncio.server import ServerConnection, serve

__all__ = ["main"]

CLOSE_SLOW_CONSUMER = 4408


class _Subscriber:
    def __init__(self, queue_size: int) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.overflowed = asyncio.Event()


class _Broadcast:
    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.channels: defaultdict[str, set[_Subscriber]] = defaultdict(set)

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
            for subscriber in tuple(self.channels.get(channel, ())):
                if subscriber.overflowed.is_set():
                    continue
                try:
                    subscriber.queue.put_nowait(str(message))
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


async def _serve(queue_size: int) -> None:
    broadcast = _Broadcast(queue_size)
    async with serve(
        broadcast.handle, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None, backlog=4096
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(port, flush=True)
        # Serve until the parent closes our stdin (or goes away).
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def main() -> None:
    queue_size = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    try:
        import uvloop

        uvloop.run(_serve(queue_size))
    except ImportError:
        asyncio.run(_serve(queue_size))


if __name__ == "__main__":
    main()
