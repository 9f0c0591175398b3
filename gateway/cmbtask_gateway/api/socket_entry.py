"""The ASGI app the server runs: the two WebSocket paths go straight to their
handlers, everything else to FastAPI.

FastAPI hands a WebSocket through a dozen layers (error and exception
middleware, the exit stack, two routers, dependency solving) on connect, and
wraps every ``send`` of every event in a closure per layer. The sockets use
none of it: they authenticate, validate and answer errors themselves. The
request guard's limits still apply to them, here. The routes stay registered
on the FastAPI app too (the OpenAPI page, in-process test clients).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from ..http_guard import RequestGuard
from .ws_client import session_socket
from .ws_runner import runner_socket

__all__ = ["SocketEntry"]

Handler = Callable[[WebSocket, str], Awaitable[None]]
_ROUTES: tuple[tuple[str, Handler], ...] = (
    ("/ws/sessions/", session_socket),
    ("/ws/runner/", runner_socket),
)


class SocketEntry:
    def __init__(self, app: FastAPI, guard: RequestGuard) -> None:
        self._app = app
        self._guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and (route := _match(scope["path"])) is not None:
            refusal = self._guard.refusal(scope)
            if refusal is not None:
                # A close before accept is answered as HTTP 403 by the server.
                await send({"type": "websocket.close", "code": 1008, "reason": refusal[2]})
                return
            handler, parameter = route
            scope["app"] = self._app  # where the handlers find the gateway
            await handler(WebSocket(scope, receive, send), parameter)
            return
        await self._app(scope, receive, send)


def _match(path: str) -> tuple[Handler, str] | None:
    for prefix, handler in _ROUTES:
        if path.startswith(prefix):
            parameter = path[len(prefix) :]
            # One non-empty path segment, as the FastAPI route would take it.
            if parameter and "/" not in parameter:
                return handler, parameter
            return None
    return None
