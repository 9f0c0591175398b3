"""User bearer tokens: create, list, revoke.

A token is shown once, when it is made; only its SHA-256 is stored, so a copy
of the database signs nobody in. Listing shows what a token is (id, owner,
name, dates, status), never the token. Revocation stamps ``revoked_at`` and
keeps the row, so that ``token list`` still says what was revoked and when.
Running gateways notice within ``token_check_interval_s`` (``connections.py``).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import ApiToken, utcnow
from ..errors import Invalid, NotFound
from .views import aware

__all__ = [
    "MAX_EXPIRY_DAYS",
    "TokenInfo",
    "create_token",
    "hash_token",
    "list_tokens",
    "revoke_token",
    "token_status",
]

MAX_EXPIRY_DAYS = 3650
MAX_USER_CHARS = 200
MAX_NAME_CHARS = 100
#: the shortest id prefix ``revoke`` accepts (a full id is 36 characters)
MIN_ID_PREFIX = 8

TokenStatus = Literal["active", "expired", "revoked"]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_status(revoked_at: datetime | None, expires_at: datetime | None, now: datetime) -> TokenStatus:
    if revoked_at is not None:
        return "revoked"
    expires_at = aware(expires_at)
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "active"


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token: everything but the token."""

    id: str
    user: str
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    status: TokenStatus

    @classmethod
    def of(cls, row: ApiToken, now: datetime) -> TokenInfo:
        expires_at, revoked_at = aware(row.expires_at), aware(row.revoked_at)
        return cls(
            id=row.id,
            user=row.user,
            name=row.name,
            created_at=aware(row.created_at) or now,
            expires_at=expires_at,
            revoked_at=revoked_at,
            status=token_status(revoked_at, expires_at, now),
        )

    def as_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "user": self.user,
            "name": self.name,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "status": self.status,
        }


def _checked(user: str, name: str | None, expires_in_days: float | None) -> None:
    if not user.strip() or len(user) > MAX_USER_CHARS:
        raise Invalid(f"a user name is 1 to {MAX_USER_CHARS} characters, not {len(user)}")
    if name is not None and not 1 <= len(name) <= MAX_NAME_CHARS:
        raise Invalid(f"a token name is 1 to {MAX_NAME_CHARS} characters, not {len(name)}")
    if expires_in_days is not None and not 0 < expires_in_days <= MAX_EXPIRY_DAYS:
        raise Invalid(f"--expires-in is a number of days above 0 and at most {MAX_EXPIRY_DAYS}")


async def create_token(
    sessions: async_sessionmaker[AsyncSession],
    user: str,
    *,
    name: str | None = None,
    expires_in_days: float | None = None,
) -> tuple[TokenInfo, str]:
    """A new token for ``user``: its description and the token itself."""
    _checked(user, name, expires_in_days)
    token = "cmbt_" + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiToken(
        id=str(uuid.uuid4()),
        user=user,
        token_hash=hash_token(token),
        name=name,
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    async with sessions.begin() as db:
        db.add(row)
    return TokenInfo.of(row, now), token


async def list_tokens(sessions: async_sessionmaker[AsyncSession], user: str | None = None) -> list[TokenInfo]:
    query = select(ApiToken).order_by(ApiToken.user, ApiToken.created_at, ApiToken.id)
    if user is not None:
        query = query.where(ApiToken.user == user)
    async with sessions() as db:
        rows = list(await db.scalars(query))
    now = utcnow()
    return [TokenInfo.of(row, now) for row in rows]


async def revoke_token(sessions: async_sessionmaker[AsyncSession], token_id: str) -> TokenInfo:
    """Revoke by id (or an unambiguous prefix of one). Revoking twice keeps
    the first time."""
    if len(token_id) < MIN_ID_PREFIX:
        raise Invalid(f"give the token id, or at least its first {MIN_ID_PREFIX} characters")
    escaped = token_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    async with sessions.begin() as db:
        matching = ApiToken.id.like(f"{escaped}%", escape="\\")
        rows = list(await db.scalars(select(ApiToken).where(matching).limit(2).with_for_update()))
        if not rows:
            raise NotFound(f"no token with id {token_id}")
        if len(rows) > 1:
            raise Invalid(f"more than one token id starts with {token_id}; give more of it")
        row = rows[0]
        if row.revoked_at is None:
            row.revoked_at = utcnow()
    return TokenInfo.of(row, utcnow())
