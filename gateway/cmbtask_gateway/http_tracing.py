"""A server span per REST request, installed only while tracing is on.

Pure ASGI and ours, not the contrib FastAPI instrumentation: it has to touch
HTTP requests only (the two WebSocket paths are long-lived and per-message
spans there would cost per delivery), and be absent, not idle, when tracing is
off. A caller's ``traceparent`` header is honoured, so a traced client's
request is the parent of everything the gateway does for it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TraceRequests"]

#: probes and scrapes: frequent, and nothing to follow in them
_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})
_propagator = TraceContextTextMapPropagator()


def _headers(scope: Scope) -> Mapping[str, str]:
    wanted = {b"traceparent", b"tracestate"}
    return {key.decode(): value.decode("latin-1") for key, value in scope["headers"] if key in wanted}


class TraceRequests:
    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _QUIET:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        parent = _propagator.extract(_headers(scope))
        attributes: MutableMapping[str, Any] = {"http.request.method": method, "url.path": scope["path"]}
        with self.tracer.start_as_current_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, sending)
            # The route template is known only once routing is done.
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.set_attribute("http.route", route)
                span.update_name(f"{method} {route}")
