"""Sessions: create, list, read, rename, suspend/resume, delete, state.

Every update names the ``version`` it read; a stale one gets 409 with the
current version, so two tabs editing one session never overwrite each other.
"""

from __future__ import annotations

import builtins
import uuid
from contextlib import AbstractAsyncContextManager
from datetime import timedelta

from cmbtask_protocol import SessionCreate, SessionList, SessionStatus, SessionUpdate, SessionView
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models import Approval, Event, Session, Task, utcnow
from ..errors import Conflict, NotFound
from ..limits import UserLimits
from .views import session_view

__all__ = ["SessionService"]


class SessionService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], limits: UserLimits | None = None) -> None:
        self._sessions = sessions
        self._limits = limits

    async def create(self, owner: str, body: SessionCreate, *, session_id: str | None = None) -> SessionView:
        """A new active session; ``session_id`` is for callers whose ids must be stable."""
        now = utcnow()
        row = Session(
            id=session_id or str(uuid.uuid4()),
            owner=owner,
            title=body.title,
            mode=body.mode,
            status=SessionStatus.ACTIVE.value,
            version=1,
            last_seq=0,
            context={},
            history=[],
            state_version=0,
            parallel_tasks=body.parallel_tasks,
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(seconds=body.ttl_s) if body.ttl_s else None,
        )
        async with self._transaction(owner) as db:
            await self._check_limit(db, owner)
            db.add(row)
        return session_view(row)

    def _transaction(self, owner: str) -> AbstractAsyncContextManager[AsyncSession]:
        return self._limits.transaction(owner) if self._limits else self._sessions.begin()

    async def _check_limit(self, db: AsyncSession, owner: str) -> None:
        if self._limits is not None:
            await self._limits.check_active_sessions(db, owner)

    async def get_row(self, db: AsyncSession, owner: str, session_id: str) -> Session:
        row = await db.get(Session, session_id)
        if row is None or row.owner != owner:
            # Someone else's session is indistinguishable from a missing one.
            raise NotFound(f"session {session_id} not found")
        return row

    async def get(self, owner: str, session_id: str) -> SessionView:
        async with self._sessions() as db:
            return session_view(await self.get_row(db, owner, session_id))

    async def list(
        self,
        owner: str,
        *,
        mode: str | None,
        status: str | None,
        query: str | None,
        limit: int,
        offset: int,
    ) -> SessionList:
        conditions = [Session.owner == owner]
        if mode:
            conditions.append(Session.mode == mode)
        if status:
            conditions.append(Session.status == status)
        if query:
            escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(Session.title.ilike(f"%{escaped}%", escape="\\"))
        async with self._sessions() as db:
            total = await db.scalar(select(func.count()).select_from(Session).where(*conditions))
            rows = await db.scalars(
                select(Session)
                .where(*conditions)
                .order_by(Session.created_at.desc(), Session.id)
                .limit(limit)
                .offset(offset)
            )
            items = [session_view(row) for row in rows]
        return SessionList(items=items, total=total or 0, limit=limit, offset=offset)

    async def update(self, owner: str, session_id: str, body: SessionUpdate) -> SessionView:
        # null means "leave as it is", as for a field not sent
        changes = {
            name: value
            for name, value in body.model_dump(exclude_unset=True, exclude={"version"}).items()
            if value is not None
        }
        return await self._bump(owner, session_id, body.version, changes)

    async def set_status(
        self, owner: str, session_id: str, status: SessionStatus, allowed_from: set[SessionStatus]
    ) -> SessionView:
        async with self._sessions() as db:
            row = await self.get_row(db, owner, session_id)
            current, version = SessionStatus(row.status), row.version
        if current == status:
            return await self.get(owner, session_id)
        if current not in allowed_from:
            raise Conflict(f"cannot move a {current.value} session to {status.value}", code="bad_state")
        return await self._bump(owner, session_id, version, {"status": status.value})

    async def _bump(
        self, owner: str, session_id: str, version: int, changes: dict[str, object]
    ) -> SessionView:
        activating = changes.get("status") == SessionStatus.ACTIVE.value
        async with self._transaction(owner) if activating else self._sessions.begin() as db:
            row = await self.get_row(db, owner, session_id)
            if activating:
                # The row's lock before the user's, in the order task
                # submission takes them: the other order could deadlock.
                await db.execute(select(Session.id).where(Session.id == session_id).with_for_update())
                await self._check_limit(db, owner)
            result = await db.execute(
                update(Session)
                .where(Session.id == session_id, Session.version == version)
                .values(**changes, version=Session.version + 1, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(
                    f"session was changed by someone else (version {row.version}, you sent {version})",
                    code="version_conflict",
                    detail={"current_version": row.version},
                )
            await db.refresh(row)
            return session_view(row)

    async def delete(self, owner: str, session_id: str) -> builtins.list[Task]:
        """Delete the session and everything in it; return its unfinished tasks
        so that the caller can stop their runners."""
        async with self._sessions.begin() as db:
            await self.get_row(db, owner, session_id)
            tasks = list(await db.scalars(select(Task).where(Task.session_id == session_id)))
            await db.execute(delete(Event).where(Event.session_id == session_id))
            await db.execute(delete(Approval).where(Approval.session_id == session_id))
            await db.execute(delete(Task).where(Task.session_id == session_id))
            await db.execute(delete(Session).where(Session.id == session_id))
        return tasks

    async def expire_due(self) -> int:
        """Mark sessions past their ``expires_at`` as expired."""
        async with self._sessions.begin() as db:
            result = await db.execute(
                update(Session)
                .where(
                    Session.expires_at.is_not(None),
                    Session.expires_at < utcnow(),
                    Session.status.in_([SessionStatus.ACTIVE.value, SessionStatus.SUSPENDED.value]),
                )
                .values(status=SessionStatus.EXPIRED.value, version=Session.version + 1)
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]
