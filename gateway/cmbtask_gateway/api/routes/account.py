"""``/api/keys`` and ``/api/settings``: what a user keeps with their account.

Keys are write-only: ``PUT`` stores one, ``GET`` names the providers that have
one, ``DELETE`` forgets one. No route ever answers with a key.
"""

from __future__ import annotations

from typing import Annotated, Any

from cmbtask_protocol import (
    PROVIDER_PATTERN,
    ErrorBody,
    ProviderKeyInfo,
    ProviderKeyList,
    ProviderKeySet,
    UserSettings,
)
from fastapi import APIRouter, Path, Response, status

from ..deps import CurrentUser, GatewayDep

router = APIRouter(tags=["account"])

Provider = Annotated[str, Path(min_length=1, max_length=32, pattern=PROVIDER_PATTERN)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    words = {
        401: "not signed in",
        404: "unknown provider, or no key stored for it",
        413: "request body too large",
        422: "invalid input",
    }
    return {code: {"model": ErrorBody, "description": words[code]} for code in codes}


@router.get("/api/keys", responses=_errors(401))
async def list_keys(user: CurrentUser, gateway: GatewayDep) -> ProviderKeyList:
    return await gateway.keys.list(user)


@router.put("/api/keys/{provider}", responses=_errors(401, 404, 413, 422))
async def set_key(
    provider: Provider, body: ProviderKeySet, user: CurrentUser, gateway: GatewayDep
) -> ProviderKeyInfo:
    return await gateway.keys.set(user, provider, body.value)


@router.delete(
    "/api/keys/{provider}", status_code=status.HTTP_204_NO_CONTENT, responses=_errors(401, 404, 422)
)
async def delete_key(provider: Provider, user: CurrentUser, gateway: GatewayDep) -> Response:
    await gateway.keys.delete(user, provider)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api/settings", responses=_errors(401))
async def get_settings(user: CurrentUser, gateway: GatewayDep) -> UserSettings:
    return await gateway.user_settings.get(user)


@router.put("/api/settings", responses=_errors(401, 413, 422))
async def put_settings(body: UserSettings, user: CurrentUser, gateway: GatewayDep) -> UserSettings:
    return await gateway.user_settings.put(user, body)
