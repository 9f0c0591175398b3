"""The ``Allow`` header of a 405 answer (RFC 9110 §15.5.6 requires it).

Starlette names only the methods of the first route whose path matched, but
one path often has several routes (``GET``, ``PATCH`` and ``DELETE`` of
``/api/sessions/{id}`` are three), so the header is built from all of them.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

__all__ = ["allowed_methods"]

#: the web UI's catch-all; it answers GET for every path, and 404 for API paths
UI_CATCH_ALL = "/{path:path}"


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> str:
    """The methods some route serves at this request's path, e.g. ``GET, HEAD, PATCH``."""
    methods: set[str] = set()
    for route in routes:
        if not isinstance(route, Route) or route.path == UI_CATCH_ALL or not route.methods:
            continue
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods.update(route.methods)
    return ", ".join(sorted(methods))
