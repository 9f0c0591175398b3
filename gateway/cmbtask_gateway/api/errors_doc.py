"""What each route can answer besides success, for the OpenAPI document.

Every error the gateway sends is an ``ErrorBody``; a client generated from
``/openapi.json`` (or a schema fuzzer) must find each status a route can
answer listed on that route, with that body. Routes name their statuses with
``errors(...)``; the statuses every authenticated route shares are added by
``AUTHENTICATED`` so that no route forgets 401.
"""

from __future__ import annotations

from typing import Any

from cmbtask_protocol import ErrorBody

__all__ = ["AUTHENTICATED", "DESCRIPTIONS", "WITH_BODY", "errors"]

DESCRIPTIONS: dict[int, str] = {
    400: "The body could not be decoded (not UTF-8 JSON).",
    401: "Missing, malformed or unknown bearer token (token and proxy auth modes).",
    404: "No such resource, or it belongs to another user.",
    409: "The resource is in a state that forbids this, or its version changed.",
    413: "The request body, or a part of it, is larger than the gateway accepts.",
    422: "The request does not follow the schema, or names something that cannot be honoured here.",
    429: "Over a per-user limit: `Retry-After` says when to try again, `detail.limit` which limit.",
}

#: statuses of every route that needs a user
AUTHENTICATED = (401, 422)
#: statuses of every route that reads a request body
WITH_BODY = (400, 413, 422)


def errors(*statuses: int | tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with the ``ErrorBody`` model."""
    flat: set[int] = set()
    for status in statuses:
        flat.update(status if isinstance(status, tuple) else (status,))
    return {status: {"model": ErrorBody, "description": DESCRIPTIONS[status]} for status in sorted(flat)}
