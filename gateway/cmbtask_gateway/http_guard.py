"""Limits on the parts of an HTTP request that arrive before any route runs.

uvicorn's HTTP parser takes a request line up to 64 KiB and any amount of
headers, and waits for a body as long as bytes keep trickling in. This guard
answers before the application sees the request:

- a path and query string over ``max_url_bytes`` → 414;
- headers over ``max_header_bytes`` in all, or more than ``max_headers`` → 431;
- a NUL (U+0000) in the path or query → 422 (PostgreSQL stores no NUL);
- a body over ``max_body_bytes`` → 413: at once when its Content-Length says
  so, and also a chunked one that announces none: the body is read (at most
  that much) before the application runs, then handed to it unchanged;
- a body not complete ``body_timeout_s`` after the request arrived → 408,
  so a client that dribbles a byte a second cannot hold a request open.

Every answer is an ``ErrorBody`` with its own ``code``.
"""

from __future__ import annotations

import asyncio

from cmbtask_protocol import ErrorBody
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestGuard"]


def _refusal(status: int, code: str, message: str) -> JSONResponse:
    body = ErrorBody(code=code, message=message).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status_code=status, headers={"Connection": "close"})


def _announced_length(scope: Scope) -> int:
    """The request's ``Content-Length``, 0 when it names none."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_url_bytes: int,
        max_header_bytes: int,
        max_headers: int,
        max_body_bytes: int,
        body_timeout_s: float,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.body_timeout_s = body_timeout_s

    def refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        """``(status, code, message)`` when the request line or headers are refused."""
        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if url_bytes > self.max_url_bytes:
            return 414, "uri_too_long", f"path and query longer than {self.max_url_bytes} bytes"
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            # PostgreSQL takes no NUL in text: refused here, not failed at the database
            return 422, "invalid_request", "the path and query may not contain NUL (U+0000)"
        headers = scope.get("headers", [])
        header_bytes = sum(len(name) + len(value) for name, value in headers)
        if header_bytes > self.max_header_bytes or len(headers) > self.max_headers:
            message = f"at most {self.max_headers} headers of {self.max_header_bytes} bytes in all"
            return 431, "headers_too_large", message
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            if scope["type"] == "websocket":
                # A close before accept is answered as HTTP 403 by the server.
                await send({"type": "websocket.close", "code": 1008, "reason": refusal[2]})
                return
            await _refusal(*refusal)(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self._with_body(scope, receive, send)

    async def _read_body(self, receive: Receive) -> list[bytes] | JSONResponse | None:
        """The whole body, a refusal, or None when the client went away."""
        chunks: list[bytes] = []
        size, more = 0, True
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while more:
                    message = await receive()
                    if message["type"] != "http.request":
                        return None
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    if size > self.max_body_bytes:
                        too_large = f"request body larger than {self.max_body_bytes} bytes"
                        return _refusal(413, "too_large", too_large)
                    more = message.get("more_body", False)
        except TimeoutError:
            return _refusal(
                408, "request_timeout", f"request body not received within {self.body_timeout_s:g} s"
            )
        return chunks

    async def _with_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _announced_length(scope) > self.max_body_bytes:  # refused before a byte of it is read
            too_large = f"request body larger than {self.max_body_bytes} bytes"
            await _refusal(413, "too_large", too_large)(scope, receive, send)
            return
        body = await self._read_body(receive)
        if body is None:
            return  # the client went away
        if isinstance(body, JSONResponse):
            await body(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(body), "more_body": False}

        await self.app(scope, replay, send)
