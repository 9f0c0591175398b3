"""Per-user limits on stored things: active sessions, task submissions per
minute, unfinished tasks.

They are counted in the database, so they hold across gateway replicas. A
count and the insert it allows must not interleave with another request of
the same user, or two requests at the limit would both pass. Each check
takes, on PostgreSQL, a transaction-scoped advisory lock on the user that
other replicas wait for too; always after any session row lock, never before,
so that the two kinds of lock are taken in one order. On SQLite (one gateway)
``transaction`` holds the user's lock in this process until commit; task
submission runs under the event store's single-writer lock already.

Socket counts are per process; they live in ``connections.py``.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from cmbtask_protocol import ACTIVE_TASK_PHASES, ErrorBody, SessionStatus, TaskPhase
from sqlalchemy import Connection, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .db.models import Session, Task, utcnow
from .errors import LimitExceeded
from .settings import Settings

__all__ = ["LIMITED", "UserLimits"]

#: ``responses=`` for routes that can answer 429
LIMITED: dict[int | str, dict[str, object]] = {
    429: {"model": ErrorBody, "description": "over a per-user limit; see Retry-After and detail.limit"}
}

_UNFINISHED = [TaskPhase.QUEUED.value, *(phase.value for phase in ACTIVE_TASK_PHASES)]
_WINDOW = timedelta(minutes=1)
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:key))")


class UserLimits:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._postgres = not settings.is_sqlite
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, user: str) -> asyncio.Lock:
        lock = self._locks.get(user)
        if lock is None:
            # Weakly held: a user's lock lives only while a request uses it.
            lock = self._locks[user] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def transaction(self, user: str) -> AsyncIterator[AsyncSession]:
        """A write transaction in which ``user``'s counts hold still, once a
        check has run in it."""
        async with self._lock(user), self._sessions.begin() as db:
            yield db

    async def _serialize(self, db: AsyncSession, user: str) -> None:
        if self._postgres:
            await db.execute(_ADVISORY_LOCK, {"key": f"cmbtask.user-limits:{user}"})

    async def check_active_sessions(self, db: AsyncSession, user: str, *, adding: int = 1) -> None:
        """Inside ``transaction(user)``, before a session becomes active."""
        maximum = self._settings.max_active_sessions_per_user
        if not maximum:
            return
        await self._serialize(db, user)
        active = await db.scalar(
            select(func.count())
            .select_from(Session)
            .where(Session.owner == user, Session.status == SessionStatus.ACTIVE.value)
        )
        if (active or 0) + adding > maximum:
            raise LimitExceeded(
                f"{user} has {active} active sessions, the most allowed is {maximum};"
                " suspend or delete one first",
                limit="active_sessions",
                maximum=maximum,
                retry_after_s=self._settings.limit_retry_after_s,
            )

    def check_task_submission(self, connection: Connection, user: str) -> None:
        """Inside the submitting write transaction (a Core ``Connection`` of
        ``EventStore.write_rows``), before the task is added."""
        per_minute = self._settings.max_task_submissions_per_minute
        unfinished_max = self._settings.max_concurrent_tasks_per_user
        if not per_minute and not unfinished_max:
            return
        if self._postgres:
            connection.execute(_ADVISORY_LOCK, {"key": f"cmbtask.user-limits:{user}"})
        if per_minute:
            self._check_rate(connection, user, per_minute)
        if unfinished_max:
            unfinished = connection.scalar(
                select(func.count()).select_from(Task).where(Task.owner == user, Task.phase.in_(_UNFINISHED))
            )
            if (unfinished or 0) >= unfinished_max:
                raise LimitExceeded(
                    f"{user} has {unfinished} unfinished tasks, the most allowed is {unfinished_max};"
                    " wait for one to finish or cancel one",
                    limit="concurrent_tasks",
                    maximum=unfinished_max,
                    retry_after_s=self._settings.limit_retry_after_s,
                )

    def _check_rate(self, connection: Connection, user: str, per_minute: int) -> None:
        since = utcnow() - _WINDOW
        # The last ``per_minute`` submissions in the window, counted in the
        # database: one row back, not up to ``per_minute`` of them.
        recent = (
            select(Task.created_at)
            .where(Task.owner == user, Task.created_at > since)
            .order_by(Task.created_at.desc())
            .limit(per_minute)
            .subquery()
        )
        count, first = connection.execute(select(func.count(), func.min(recent.c.created_at))).one()
        if count < per_minute:
            return
        # The oldest of the last ``per_minute`` leaves the window first.
        oldest = first if first.tzinfo else first.replace(tzinfo=since.tzinfo)
        wait_s = math.ceil((oldest + _WINDOW - utcnow()).total_seconds())
        raise LimitExceeded(
            f"{user} submitted {per_minute} tasks in the last minute, the most allowed;"
            f" retry in {max(1, wait_s)} s",
            limit="task_submissions_per_minute",
            maximum=per_minute,
            retry_after_s=wait_s,
        )
