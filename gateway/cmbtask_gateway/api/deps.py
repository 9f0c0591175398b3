"""Route dependencies, so that signatures read like a list of needs."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from ..auth import Identity
from ..composition import Gateway

__all__ = [
    "CurrentUser",
    "GatewayDep",
    "bearer_from",
    "get_gateway",
    "identity_for_connection",
    "user_for_connection",
]


def get_gateway(connection: HTTPConnection) -> Gateway:
    gateway: Gateway = connection.app.state.gateway
    return gateway


def bearer_from(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return connection.query_params.get("token") or None


async def identity_for_connection(connection: HTTPConnection) -> Identity:
    gateway = get_gateway(connection)
    proxy_user = connection.headers.get(gateway.settings.proxy_user_header)
    identity = await gateway.auth.identify(bearer_from(connection), proxy_user)
    structlog.contextvars.bind_contextvars(user=identity.user)
    return identity


async def user_for_connection(connection: HTTPConnection) -> str:
    return (await identity_for_connection(connection)).user


async def _current_user(request: Request) -> str:
    user = await user_for_connection(request)
    # Routes run in a copy of the middleware's context: leave the user where
    # the access log can read it.
    request.state.user = user
    return user


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
CurrentUser = Annotated[str, Depends(_current_user)]
