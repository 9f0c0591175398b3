"""The gateway's error hierarchy, and how each maps to HTTP.

::

    GatewayError
    ├── NotFound          404  (also: exists but belongs to someone else)
    ├── Conflict          409  (wrong version, already resolved, bad state)
    ├── Invalid           422  (input that parses but cannot be honoured)
    └── Unauthorized      401

Services raise these; the API turns them into ``ErrorBody`` JSON and the
client socket into ``ws.error`` frames.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Conflict", "GatewayError", "Invalid", "NotFound", "Unauthorized"]


class GatewayError(Exception):
    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if code is not None:
            self.code = code

    def with_status(self, status_code: int) -> GatewayError:
        self.status_code = status_code
        return self


class NotFound(GatewayError):
    status_code = 404
    code = "not_found"


class Conflict(GatewayError):
    status_code = 409
    code = "conflict"


class Invalid(GatewayError):
    status_code = 422
    code = "invalid"


class Unauthorized(GatewayError):
    status_code = 401
    code = "unauthorized"
