"""The access log: a request id, one log line and the request counter per HTTP request.

A plain ASGI middleware. Starlette's ``@app.middleware("http")`` runs every
request through a task group and memory streams, and that wrapping cost more
of a small request's CPU (a task submit) than its database write.

The request id is the client's ``X-Request-Id`` or a new one; it is bound in
the log context for everything the request logs, and returned in the
response's ``X-Request-Id``. Requests over the limits are refused inside it
(``http_guard``), so their refusals are logged too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import get_logger
from .metrics import Metrics

__all__ = ["AccessLog"]

log = get_logger("cmbtask.http")
#: polled often, logged never: they would drown the requests that matter
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLog:
    def __init__(self, app: ASGIApp, *, metrics: Callable[[], Metrics]) -> None:
        """``metrics``: the gateway's, looked up per request (it is built at startup)."""
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = headers.get("x-request-id") or uuid.uuid4().hex[:16]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500  # until the response starts (an application that raises logs nothing here)
        id_header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        # where a route leaves the user it served (``request.state.user``)
        state = scope.setdefault("state", {})
        started = time.perf_counter()
        await self.app(scope, receive, send_with_id)
        path, method = scope["path"], scope["method"]
        if path not in _QUIET_PATHS:
            log.info(
                "http.request",
                method=method,
                path=path,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                user=state.get("user"),
            )
        self.metrics().http_requests.labels(method, str(status)).inc()
