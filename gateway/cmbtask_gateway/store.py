"""Writing events: one transaction assigns ``seq``, stores, then fans out.

Every change that emits events goes through ``EventStore.write(session_id)``.
Inside it, the caller changes rows and ``emit``s events; on exit the session's
``last_seq`` is bumped by the number of events in a single ``UPDATE …
RETURNING`` (a row lock on PostgreSQL, the database lock on SQLite), so seqs
are gap-free and strictly increasing even with several gateway replicas. The
events are published to the hub only after the commit, under a lock that
keeps publication in ``seq`` order within this process.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cmbtask_protocol import PROTOCOL_VERSION
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .db.models import Event, Session, utcnow
from .errors import NotFound
from .hub import Hub
from .metrics import Metrics

__all__ = ["EventStore", "WriteTx", "envelope", "format_ts"]


def format_ts(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def envelope(
    seq: int, session_id: str, task_id: str | None, type_: str, ts: datetime, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "v": PROTOCOL_VERSION,
        "seq": seq,
        "session_id": session_id,
        "task_id": task_id,
        "type": type_,
        "ts": format_ts(ts),
        "data": data,
    }


@dataclass
class _Draft:
    type: str
    data: dict[str, Any]
    task_id: str | None
    rseq: int | None
    ts: datetime


@dataclass
class WriteTx:
    db: AsyncSession
    session_id: str
    drafts: list[_Draft] = field(default_factory=list)
    callbacks: list[Callable[[], Any]] = field(default_factory=list)
    stored: list[dict[str, Any]] = field(default_factory=list)

    def emit(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        task_id: str | None = None,
        rseq: int | None = None,
        ts: datetime | None = None,
    ) -> None:
        self.drafts.append(_Draft(type_, data, task_id, rseq, ts or utcnow()))

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once the transaction has committed (not on rollback)."""
        self.callbacks.append(callback)


class EventStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        hub: Hub,
        metrics: Metrics,
        *,
        single_writer: bool,
    ) -> None:
        self._sessions = sessions
        self._hub = hub
        self._metrics = metrics
        # SQLite has one writer anyway: queueing here is cheaper than its
        # busy-wait. PostgreSQL serialises per session on the row lock.
        self._global_lock: asyncio.Lock | None = asyncio.Lock() if single_writer else None
        self._session_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._global_lock or self._session_locks[session_id]

    @asynccontextmanager
    async def write(self, session_id: str) -> AsyncIterator[WriteTx]:
        async with self._lock(session_id):
            async with self._sessions() as db:
                tx = WriteTx(db, session_id)
                async with db.begin():
                    yield tx
                    await self._flush(tx)
            if tx.stored:
                self._publish(tx)
        for callback in tx.callbacks:
            result = callback()
            if asyncio.iscoroutine(result):
                await result

    async def _flush(self, tx: WriteTx) -> None:
        if not tx.drafts:
            return
        count = len(tx.drafts)
        last = await tx.db.scalar(
            update(Session)
            .where(Session.id == tx.session_id)
            .values(last_seq=Session.last_seq + count)
            .returning(Session.last_seq)
            .execution_options(synchronize_session=False)
        )
        if last is None:
            raise NotFound("session not found")
        first = last - count + 1
        rows = [
            {
                "session_id": tx.session_id,
                "seq": first + index,
                "task_id": draft.task_id,
                "rseq": draft.rseq,
                "type": draft.type,
                "ts": draft.ts,
                "data": draft.data,
            }
            for index, draft in enumerate(tx.drafts)
        ]
        await tx.db.execute(insert(Event), rows)
        tx.stored = rows

    def _publish(self, tx: WriteTx) -> None:
        items = [
            (
                row["seq"],
                json.dumps(
                    envelope(row["seq"], tx.session_id, row["task_id"], row["type"], row["ts"], row["data"]),
                    separators=(",", ":"),
                ),
            )
            for row in tx.stored
        ]
        self._metrics.events_in.inc(len(items))
        self._hub.publish(tx.session_id, items)

    async def page(self, session_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        async with self._sessions() as db:
            rows = await db.scalars(
                select(Event)
                .where(Event.session_id == session_id, Event.seq > after)
                .order_by(Event.seq)
                .limit(limit)
            )
            return [
                envelope(row.seq, row.session_id, row.task_id, row.type, row.ts, row.data) for row in rows
            ]
