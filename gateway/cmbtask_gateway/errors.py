"""The gateway's error hierarchy, and how each maps to HTTP.

::

    GatewayError
    ├── NotFound          404  (also: exists but belongs to someone else)
    ├── Conflict          409  (wrong version, already resolved, bad state)
    ├── Invalid           422  (input that parses but cannot be honoured)
    ├── Unauthorized      401
    └── LimitExceeded     429  (a per-user limit; carries ``Retry-After``)

Services raise these; the API turns them into ``ErrorBody`` JSON and the
client socket into ``ws.error`` frames.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Conflict", "GatewayError", "Invalid", "LimitExceeded", "NotFound", "Unauthorized"]


class GatewayError(Exception):
    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers of the answer."""
        return {}

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


class LimitExceeded(GatewayError):
    """``detail`` names the limit (``{"limit": …, "max": …}``) so that a
    client can tell which one it hit without parsing the sentence."""

    status_code = 429
    code = "limit_exceeded"

    def __init__(self, message: str, *, limit: str, maximum: int, retry_after_s: int) -> None:
        super().__init__(message, detail={"limit": limit, "max": maximum, "retry_after_s": retry_after_s})
        self.limit = limit
        self.retry_after_s = max(1, retry_after_s)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}
