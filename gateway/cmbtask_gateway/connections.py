"""Open client sockets per user: the per-user socket limit, and closing the
sockets whose token was revoked or has expired.

A socket is authenticated once, when it opens, so revoking its token must
reach it some other way. Every ``token_check_interval_s`` this process asks
the database which of the tokens its sockets (and its auth cache) use are no
longer valid, in one primary-key query, and closes those sockets with 4401.
Asking the database rather than listening for a notification works the same
on SQLite and PostgreSQL, for a revocation made by the CLI or by another
replica, and for expiry, which no one announces; a replica that was briefly
cut off from the database catches up on its next check instead of missing a
message.

The socket count is per gateway process: N replicas allow up to N times the
limit, which is enough to stop one user from exhausting a process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from cmbtask_protocol import CLOSE_AUTH
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.websockets import WebSocket

from .auth import Authenticator, Identity
from .db.models import ApiToken, utcnow
from .logs import get_logger
from .loop_errors import LoopErrors
from .services.tokens import token_status
from .settings import Settings

__all__ = ["Connections"]

log = get_logger(__name__)
#: token ids per query: well under every database's bound-parameter limit
_CHUNK = 500


class Connections:
    def __init__(
        self, settings: Settings, sessions: async_sessionmaker[AsyncSession], auth: Authenticator
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._auth = auth
        self._by_user: defaultdict[str, set[WebSocket]] = defaultdict(set)
        self._identities: dict[WebSocket, Identity] = {}
        # Strong references: the event loop keeps only weak ones to its tasks.
        self._closing: set[asyncio.Task[None]] = set()

    def count(self, user: str) -> int:
        return len(self._by_user.get(user, ()))

    def admit(self, identity: Identity, ws: WebSocket) -> str | None:
        """Register an accepted socket; or the reason it may not stay open."""
        maximum = self._settings.max_sockets_per_user
        if maximum and self.count(identity.user) >= maximum:
            log.warning("ws.limit_exceeded", user=identity.user, limit=maximum)
            return f"too many sockets: at most {maximum} per user on this gateway"
        self._by_user[identity.user].add(ws)
        self._identities[ws] = identity
        return None

    def release(self, ws: WebSocket) -> None:
        identity = self._identities.pop(ws, None)
        if identity is None:
            return
        group = self._by_user.get(identity.user)
        if group is not None:
            group.discard(ws)
            if not group:
                del self._by_user[identity.user]

    async def close(self) -> None:
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def run(self) -> None:
        """Check tokens until cancelled."""
        errors = LoopErrors("tokens.check_failed")
        while True:
            await asyncio.sleep(self._settings.token_check_interval_s)
            try:
                await self.check_once()
                errors.succeeded()
            except Exception as error:
                errors.failed(error)

    async def check_once(self) -> None:
        watched = self._auth.cached_token_ids()
        watched.update(identity.token_id for identity in self._identities.values() if identity.token_id)
        if not watched:
            return
        dead = await self._dead_tokens(sorted(watched))
        if not dead:
            return
        self._auth.forget(set(dead))
        for ws, identity in list(self._identities.items()):
            if identity.token_id in dead:
                self.release(ws)
                # Side by side: a close waits for the client's answer, and one
                # half-open socket must not hold up the others.
                task = asyncio.create_task(self._close(ws, identity, f"token {dead[identity.token_id]}"))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def _dead_tokens(self, token_ids: list[str]) -> dict[str, str]:
        """Token id -> why it is no longer valid (revoked, expired, deleted)."""
        dead: dict[str, str] = {}
        now = utcnow()
        async with self._sessions() as db:
            for start in range(0, len(token_ids), _CHUNK):
                chunk = token_ids[start : start + _CHUNK]
                columns = (ApiToken.id, ApiToken.revoked_at, ApiToken.expires_at)
                rows = await db.execute(select(*columns).where(ApiToken.id.in_(chunk)))
                found = set()
                for token_id, revoked_at, expires_at in rows:
                    found.add(token_id)
                    if (status := token_status(revoked_at, expires_at, now)) != "active":
                        dead[token_id] = status
                dead.update({token_id: "revoked" for token_id in set(chunk) - found})
        return dead

    async def _close(self, ws: WebSocket, identity: Identity, reason: str) -> None:
        log.info("ws.token_closed", user=identity.user, token_id=identity.token_id, reason=reason)
        # The socket's own tasks see the close as a disconnect and clean up;
        # it may already be closing by itself.
        with contextlib.suppress(RuntimeError, OSError):
            await ws.close(CLOSE_AUTH, reason)
