"""``/api/keys`` and ``/api/settings``: what a user keeps with their account.

Keys are write-only: ``PUT`` stores one, ``GET`` names the providers that have
one, ``DELETE`` forgets one. No route ever answers with a key.
"""

from __future__ import annotations

from typing import Annotated

from cmbtask_protocol import (
    PROVIDER_PATTERN,
    ProviderKeyInfo,
    ProviderKeyList,
    ProviderKeySet,
    UserSettings,
)
from fastapi import APIRouter, Path, Response, status

from ..deps import CurrentUser, GatewayDep
from ..errors_doc import AUTHENTICATED, WITH_BODY, errors

router = APIRouter(tags=["account"])

Provider = Annotated[str, Path(min_length=1, max_length=32, pattern=PROVIDER_PATTERN)]


@router.get("/api/keys", responses=errors(AUTHENTICATED))
async def list_keys(user: CurrentUser, gateway: GatewayDep) -> ProviderKeyList:
    return await gateway.keys.list(user)


@router.put("/api/keys/{provider}", responses=errors(AUTHENTICATED, WITH_BODY, 404))
async def set_key(
    provider: Provider, body: ProviderKeySet, user: CurrentUser, gateway: GatewayDep
) -> ProviderKeyInfo:
    return await gateway.keys.set(user, provider, body.value)


@router.delete(
    "/api/keys/{provider}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(AUTHENTICATED, 404)
)
async def delete_key(provider: Provider, user: CurrentUser, gateway: GatewayDep) -> Response:
    await gateway.keys.delete(user, provider)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api/settings", responses=errors(AUTHENTICATED))
async def get_settings(user: CurrentUser, gateway: GatewayDep) -> UserSettings:
    return await gateway.user_settings.get(user)


@router.put("/api/settings", responses=errors(AUTHENTICATED, WITH_BODY))
async def put_settings(body: UserSettings, user: CurrentUser, gateway: GatewayDep) -> UserSettings:
    return await gateway.user_settings.put(user, body)
