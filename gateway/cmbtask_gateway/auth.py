"""Who is calling: users (none / token / proxy modes) and per-task runners.

User tokens are random strings whose SHA-256 is stored (``services/tokens.py``
makes, lists and revokes them); runner tokens are HMAC-signed, name one task
and expire, so a leaked runner token can publish only into its own task, and
only for a while.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .db.models import ApiToken, utcnow
from .errors import Unauthorized
from .services.tokens import create_token, hash_token, token_status
from .services.views import aware
from .settings import Settings

__all__ = ["Authenticator", "Identity", "RunnerTokens", "create_user_token", "hash_token"]

#: past this many cached tokens, stale entries are dropped on the next insert
_CACHE_MAX = 4096


async def create_user_token(sessions: async_sessionmaker[AsyncSession], user: str) -> str:
    return (await create_token(sessions, user))[1]


@dataclass(frozen=True)
class Identity:
    """A caller: the user, and the token it signed in with (token mode only),
    so that what it opened can be closed when that token dies."""

    user: str
    token_id: str | None = None
    expires_at: datetime | None = None


class Authenticator:
    """Maps the credentials of a request or socket to an ``Identity``."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions
        # Token lookups happen on every request, so known-good tokens are
        # cached, but only for ``auth_cache_ttl_s``: a token revoked on another
        # process (the CLI, another replica) must stop working soon. The
        # socket watcher also evicts revoked ones as soon as it sees them.
        self._cache: dict[str, tuple[Identity, float]] = {}

    @property
    def mode(self) -> str:
        return self._settings.auth_mode

    async def user_for(self, bearer: str | None, proxy_user: str | None) -> str:
        return (await self.identify(bearer, proxy_user)).user

    async def identify(self, bearer: str | None, proxy_user: str | None) -> Identity:
        mode = self._settings.auth_mode
        if mode == "none":
            return Identity(self._settings.local_user)
        if mode == "proxy":
            if not proxy_user:
                raise Unauthorized(f"missing {self._settings.proxy_user_header} header")
            return Identity(proxy_user)
        if not bearer:
            raise Unauthorized("missing bearer token", code="missing_token")
        digest = hash_token(bearer)
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[1] < self._settings.auth_cache_ttl_s:
            identity = cached[0]
            if identity.expires_at is None or identity.expires_at > utcnow():
                return identity
        self._cache.pop(digest, None)
        identity = await self._lookup(digest)
        self._remember(digest, identity)
        return identity

    async def _lookup(self, digest: str) -> Identity:
        async with self._sessions() as db:
            row = await db.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
        if row is None:
            raise Unauthorized("invalid token", code="invalid_token")
        status = token_status(row.revoked_at, row.expires_at, utcnow())
        if status != "active":
            raise Unauthorized(f"token {status}", code=f"{status}_token")
        return Identity(row.user, row.id, aware(row.expires_at))

    def _remember(self, digest: str, identity: Identity) -> None:
        if self._settings.auth_cache_ttl_s <= 0:
            return
        now = time.monotonic()
        if len(self._cache) >= _CACHE_MAX:
            ttl = self._settings.auth_cache_ttl_s
            self._cache = {key: entry for key, entry in self._cache.items() if now - entry[1] < ttl}
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
        self._cache[digest] = (identity, now)

    def cached_token_ids(self) -> set[str]:
        return {identity.token_id for identity, _ in self._cache.values() if identity.token_id}

    def forget(self, token_ids: set[str]) -> None:
        """Drop cached tokens that were found revoked or expired."""
        self._cache = {key: entry for key, entry in self._cache.items() if entry[0].token_id not in token_ids}


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
