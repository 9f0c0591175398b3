"""A user's defaults for new tasks: budget limits and price overrides.

Read by task submission (in its own transaction) to fill in a task's
``max_cost_usd`` / ``max_tokens`` and to snapshot the prices its runner uses.
"""

from __future__ import annotations

from typing import Any

from cmbtask_protocol import TaskCreate, UserSettings
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import UserSetting, utcnow

__all__ = ["UserSettingsService", "task_budget"]


def task_budget(connection: Connection, owner: str, body: TaskCreate) -> dict[str, Any]:
    """The new task's ``max_cost_usd``, ``max_tokens`` and ``prices`` columns: its own
    limits, else the owner's defaults; the owner's prices as they are now."""
    columns = (UserSetting.max_cost_usd, UserSetting.max_tokens, UserSetting.prices)
    defaults = connection.execute(select(*columns).where(UserSetting.user == owner)).first()
    if defaults is None:
        return {"max_cost_usd": body.max_cost_usd, "max_tokens": body.max_tokens, "prices": None}
    max_cost_usd, max_tokens, prices = defaults
    return {
        "max_cost_usd": body.max_cost_usd or max_cost_usd,
        "max_tokens": body.max_tokens or max_tokens,
        "prices": prices or None,
    }


class UserSettingsService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def get(self, user: str) -> UserSettings:
        async with self._sessions() as db:
            row = await db.get(UserSetting, user)
            return UserSettings() if row is None else _view(row)

    async def put(self, user: str, body: UserSettings) -> UserSettings:
        prices = {model: price.model_dump() for model, price in body.prices.items()}
        async with self._sessions.begin() as db:
            row = await db.get(UserSetting, user, with_for_update=True)
            if row is None:
                row = UserSetting(user=user)
                db.add(row)
            row.max_cost_usd, row.max_tokens = body.max_cost_usd, body.max_tokens
            row.prices, row.updated_at = prices, utcnow()
            return _view(row)


def _view(row: UserSetting) -> UserSettings:
    return UserSettings(max_cost_usd=row.max_cost_usd, max_tokens=row.max_tokens, prices=row.prices or {})
