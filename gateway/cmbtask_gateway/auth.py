"""Who is calling: users (none / token / proxy modes) and per-task runners.

User tokens are random strings whose SHA-256 is stored; runner tokens are
HMAC-signed, name one task and expire, so a leaked runner token can publish
only into its own task, and only for a while.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .db.models import ApiToken
from .errors import Unauthorized
from .settings import Settings

__all__ = ["Authenticator", "RunnerTokens", "create_user_token", "hash_token"]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_user_token(sessions: async_sessionmaker[AsyncSession], user: str) -> str:
    token = "cmbt_" + secrets.token_urlsafe(32)
    async with sessions.begin() as db:
        db.add(ApiToken(id=str(uuid.uuid4()), user=user, token_hash=hash_token(token)))
    return token


class Authenticator:
    """Maps the credentials of a request or socket to a user name."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions
        # Token lookups happen on every request; users are few and tokens are
        # never revoked in place, so a positive cache is safe.
        self._cache: dict[str, str] = {}

    @property
    def mode(self) -> str:
        return self._settings.auth_mode

    async def user_for(self, bearer: str | None, proxy_user: str | None) -> str:
        mode = self._settings.auth_mode
        if mode == "none":
            return self._settings.local_user
        if mode == "proxy":
            if not proxy_user:
                raise Unauthorized(f"missing {self._settings.proxy_user_header} header")
            return proxy_user
        if not bearer:
            raise Unauthorized("missing bearer token", code="missing_token")
        digest = hash_token(bearer)
        if (user := self._cache.get(digest)) is not None:
            return user
        async with self._sessions() as db:
            user = await db.scalar(select(ApiToken.user).where(ApiToken.token_hash == digest))
        if user is None:
            raise Unauthorized("invalid token", code="invalid_token")
        self._cache[digest] = user
        return user


class RunnerTokens:
    """``rt1.<task_id>.<expiry>.<signature>`` tokens, valid for one task."""

    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self._secret = secret
        self._ttl_s = ttl_s

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, task_id: str, ttl_s: float | None = None) -> str:
        expiry = int(time.time() + (ttl_s or self._ttl_s))
        payload = f"{task_id}.{expiry}"
        return f"rt1.{payload}.{self._sign(payload)}"

    def verify(self, token: str | None, task_id: str) -> None:
        if not token:
            raise Unauthorized("missing runner token", code="missing_token")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "rt1":
            raise Unauthorized("malformed runner token", code="invalid_token")
        _, token_task, expiry, signature = parts
        if not hmac.compare_digest(signature, self._sign(f"{token_task}.{expiry}")):
            raise Unauthorized("invalid runner token", code="invalid_token")
        if token_task != task_id:
            raise Unauthorized("runner token is for another task", code="invalid_token")
        if not expiry.isdigit() or int(expiry) < time.time():
            raise Unauthorized("runner token expired", code="expired_token")
