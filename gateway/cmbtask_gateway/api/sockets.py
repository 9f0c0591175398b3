"""Helpers that both WebSocket routes (client and runner) share."""

from __future__ import annotations

import asyncio

from fastapi import WebSocket, WebSocketDisconnect

__all__ = ["cancel_and_wait", "receive_text"]


async def receive_text(ws: WebSocket) -> str | None:
    """The next text frame; None for a binary frame that is not UTF-8."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is not None:
        return str(message["text"])
    try:
        return bytes(message.get("bytes") or b"").decode()
    except UnicodeDecodeError:
        return None


async def cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the socket's helper tasks and wait until they have ended.

    Their own outcomes were read by the caller or do not matter any more; but
    a cancellation of the caller itself still propagates (``gather`` returns
    the children's exceptions, not its own)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
