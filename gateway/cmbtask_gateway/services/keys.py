"""Users' own LLM provider keys: stored sealed, listed by name, opened only to
hand them to that user's runners.

A key leaves this module in clear in exactly one place, :meth:`KeyService.runner_envs`,
whose answer goes into a runner's environment (a local process's ``env``, a
pod's per-task Secret) and nowhere else: not into logs, events, task rows or
error messages, which name the provider only.
"""

from __future__ import annotations

from collections.abc import Iterable

from cmbtask_protocol import PROVIDER_KEY_VARIABLES, ProviderKeyInfo, ProviderKeyList
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..crypto import KeyBox, SealedValueError
from ..db.models import ProviderKey, utcnow
from ..errors import NotFound
from ..logs import get_logger
from .views import aware

__all__ = ["KeyService", "check_provider", "stored_key_variables"]

log = get_logger(__name__)


def check_provider(provider: str) -> str:
    """The provider's variable name; ``NotFound`` for a provider we do not know."""
    variable = PROVIDER_KEY_VARIABLES.get(provider)
    if variable is None:
        known = ", ".join(sorted(PROVIDER_KEY_VARIABLES))
        raise NotFound(f"unknown provider {provider!r}; known: {known}", code="unknown_provider")
    return variable


def stored_key_variables(connection: Connection, user: str) -> set[str]:
    """The variables (``OPENAI_API_KEY`` …) the user's runners will have from their own keys."""
    providers = connection.scalars(select(ProviderKey.provider).where(ProviderKey.user == user))
    return {PROVIDER_KEY_VARIABLES[p] for p in providers if p in PROVIDER_KEY_VARIABLES}


class KeyService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], box: KeyBox, *, fallback: bool) -> None:
        self._sessions = sessions
        self._box = box
        self.fallback = fallback

    async def variables(self, user: str) -> set[str]:
        """The key variables ``user``'s runners get from keys the user stored."""
        async with self._sessions() as db:
            connection = await db.connection()
            return await connection.run_sync(stored_key_variables, user)

    async def list(self, user: str) -> ProviderKeyList:
        async with self._sessions() as db:
            rows = await db.scalars(select(ProviderKey).where(ProviderKey.user == user))
            items = [_info(row) for row in sorted(rows, key=lambda r: r.provider)]
        return ProviderKeyList(
            items=items, providers=dict(PROVIDER_KEY_VARIABLES), gateway_fallback=self.fallback
        )

    async def set(self, user: str, provider: str, value: str) -> ProviderKeyInfo:
        check_provider(provider)
        sealed = self._box.seal(user, provider, value)
        async with self._sessions.begin() as db:
            row = await db.get(ProviderKey, (user, provider), with_for_update=True)
            now = utcnow()
            if row is None:
                row = ProviderKey(
                    user=user, provider=provider, ciphertext=sealed, created_at=now, updated_at=now
                )
                db.add(row)
            else:
                row.ciphertext, row.updated_at = sealed, now
            info = _info(row)
        log.info("keys.stored", user=user, provider=provider)
        return info

    async def delete(self, user: str, provider: str) -> None:
        check_provider(provider)
        async with self._sessions.begin() as db:
            row = await db.get(ProviderKey, (user, provider))
            if row is None:
                raise NotFound(f"no {provider} key is stored for you", code="no_key")
            await db.delete(row)
        log.info("keys.deleted", user=user, provider=provider)

    async def runner_envs(self, users: Iterable[str]) -> dict[str, dict[str, str]]:
        """Per user, ``{OPENAI_API_KEY: …}`` from the keys the user stored (every
        user of a dispatch wave in one read). A key that no longer opens (the
        gateway's secret changed) is left out, with a warning."""
        wanted = sorted(set(users))
        envs: dict[str, dict[str, str]] = {user: {} for user in wanted}
        if not wanted:
            return envs
        async with self._sessions() as db:
            rows = list(await db.scalars(select(ProviderKey).where(ProviderKey.user.in_(wanted))))
        for row in rows:
            variable = PROVIDER_KEY_VARIABLES.get(row.provider)
            if variable is None:
                continue
            try:
                envs[row.user][variable] = self._box.open(row.user, row.provider, row.ciphertext)
            except SealedValueError as error:
                log.warning("keys.unreadable", user=row.user, provider=row.provider, error=str(error))
        return envs


def _info(row: ProviderKey) -> ProviderKeyInfo:
    updated = aware(row.updated_at)
    assert updated is not None
    return ProviderKeyInfo(
        provider=row.provider, env_var=PROVIDER_KEY_VARIABLES[row.provider], updated_at=updated
    )
