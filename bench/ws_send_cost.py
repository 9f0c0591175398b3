"""Server CPU per WebSocket message sent, by server stack (issue 12).

    .venv/bin/python bench/ws_send_cost.py [--messages 100000]

One server process sends ``--messages`` envelope-sized text frames to one
client as fast as it can; the server measures its own CPU time (user +
system) over the sends, so the figure holds on a busy machine too. Three
stacks: uvicorn's ASGI WebSocket through Starlette's ``send_text`` (what the
gateway did), the same through the ASGI ``send`` itself (what the gateway
does now), and ``websockets``' own asyncio server (the raw baseline's stack),
each with compression off and uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import socket
from typing import Any

import uvloop

__all__ = ["main"]

_TEXT = (
    '{"v":1,"seq":42,"session_id":"0123456789abcdef0123456789abcdef","task_id":'
    '"0123456789abcdef0123456789abcdef","type":"output","ts":"2026-12-02T12:00:00.123Z",'
    '"data":{"stream":"stdout","text":"' + "x" * 80 + '"}}'
)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _uvicorn_server(stack: str, port: int, count: int, out: Any) -> None:
    import uvicorn
    from starlette.websockets import WebSocket

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        started = _cpu()
        if stack == "starlette":
            for _ in range(count):
                await ws.send_text(_TEXT)
        else:
            for _ in range(count):
                await send({"type": "websocket.send", "text": _TEXT})
        out.put(_cpu() - started)
        await ws.receive()

    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="error", ws_per_message_deflate=False, loop="uvloop"
    )


def _websockets_server(port: int, count: int, out: Any) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        started = _cpu()
        for _ in range(count):
            await ws.send(_TEXT)
        out.put(_cpu() - started)
        await ws.recv()

    async def run() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
            await asyncio.get_running_loop().create_future()

    uvloop.run(run())


async def _client(port: int, count: int) -> None:
    from websockets.asyncio.client import connect

    for _ in range(100):  # until the server listens
        try:
            ws = await connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None)
            break
        except OSError:
            await asyncio.sleep(0.1)
    async with ws:
        for _ in range(count):
            await ws.recv()
        await ws.send("done")


def _measure(stack: str, count: int) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out: Any = multiprocessing.Queue()
    if stack == "websockets":
        server = multiprocessing.Process(target=_websockets_server, args=(port, count, out), daemon=True)
    else:
        server = multiprocessing.Process(target=_uvicorn_server, args=(stack, port, count, out), daemon=True)
    server.start()
    try:
        asyncio.run(_client(port, count))
        return float(out.get(timeout=60)) / count
    finally:
        server.terminate()
        server.join(10)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    for _ in range(args.repeat):
        for stack in ("starlette", "asgi", "websockets"):
            cost = _measure(stack, args.messages)
            print(f"  {stack:<12} {cost * 1e6:6.1f} µs of server CPU per message", flush=True)


if __name__ == "__main__":
    main()
