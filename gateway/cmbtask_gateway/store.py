"""Writing events: one transaction assigns ``seq``, stores, then fans out.

Every change that emits events goes through ``EventStore.write(session_id)``.
Inside it, the caller changes rows and ``emit``s events; on exit the session's
``last_seq`` is bumped by the number of events in a single ``UPDATE …
RETURNING`` (a row lock on PostgreSQL, the database lock on SQLite), so seqs
are gap-free and strictly increasing even with several gateway replicas. The
events are published to the hub only after the commit.

Publication is not in ``seq`` order, and cannot cheaply be: ``write`` and
``write_group`` on one session serialise on the database row, not on a lock
of this process, so the later commit may return first; and another replica's
events arrive as a poke that can trail this process's own later ones. The
receiver (the client socket's sender) restores the order, filling gaps from
the database with reads bounded by the seq it is about to send.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple, TypeVar, cast

from cmbtask_protocol import PROTOCOL_VERSION
from sqlalchemy import Connection, Select, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import jsontext, tracing
from .coalescing import Coalescing
from .db.models import Event, Session, utcnow
from .db.transactions import Transactions
from .errors import NotFound
from .hub import Hub, Poke, Stored
from .metrics import Metrics
from .replica_relay import PgRelay
from .wire_frames import text_frame

__all__ = [
    "EventStore",
    "Numberer",
    "RowWork",
    "SocketStart",
    "WriteGroup",
    "WriteTx",
    "envelope",
    "format_ts",
    "raw_cursor",
]

T = TypeVar("T")
_sessions = cast(Table, Session.__table__)
_events = cast(Table, Event.__table__)
#: ``number(connection, {session_id: count})`` -> each session's new ``last_seq``
Numberer = Callable[[Connection, dict[str, int]], dict[str, int]]
#: what a ``write_rows`` function returns: its result, and the event rows it
#: stored per session (to publish once committed)
RowWork = tuple[T, dict[str, list[dict[str, Any]]]]


def format_ts(ts: datetime) -> str:
    """``2026-12-02T12:00:00.123Z``; every stored time is UTC."""
    return ts.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


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


@dataclass
class WriteGroup:
    """Per-item change sets inside one shared transaction."""

    db: AsyncSession
    txs: list[WriteTx] = field(default_factory=list)

    def tx(self, session_id: str) -> WriteTx:
        tx = WriteTx(self.db, session_id)
        self.txs.append(tx)
        return tx

    def by_session(self) -> list[WriteTx]:
        """One change set per session, drafts in the order they were made."""
        merged: dict[str, WriteTx] = {}
        for tx in self.txs:
            merged.setdefault(tx.session_id, WriteTx(self.db, tx.session_id)).drafts.extend(tx.drafts)
        return list(merged.values())


async def _run_callbacks(txs: list[WriteTx]) -> None:
    for tx in txs:
        for callback in tx.callbacks:
            result = callback()
            if asyncio.iscoroutine(result):
                await result


def raw_cursor(connection: Connection) -> Any:
    """A cursor of the driver itself, in ``connection``'s transaction."""
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None  # a connection that has begun a transaction holds one
    return dbapi.cursor()


def _number_on_sqlite(connection: Connection, counts: dict[str, int]) -> dict[str, int]:
    """``_number`` on the stdlib driver: SQLite has one writer (no lock order to
    keep) and runs a cached statement per session faster than SQLAlchemy
    compiles one ``IN`` list."""
    cursor = raw_cursor(connection)
    last_seqs: dict[str, int] = {}
    for session_id, count in counts.items():
        cursor.execute(
            "UPDATE sessions SET last_seq = last_seq + ? WHERE id = ? RETURNING last_seq", (count, session_id)
        )
        if (row := cursor.fetchone()) is not None:
            last_seqs[session_id] = row[0]
    return last_seqs


#: PostgreSQL's numbering, one fixed prepared statement whatever the number of
#: sessions (``unnest`` of two arrays): SQLAlchemy compiling an ``IN`` list and
#: a ``CASE`` per group cost more CPU than the round trip. ``locked`` takes the
#: rows' locks in id order first: an UPDATE locks them in scan order, which
#: updates reshuffle, so two groups sharing sessions (two replicas' ingest
#: writers) could each hold one and wait for the other. (A CTE with ``FOR
#: UPDATE`` is never folded into the query, and every plan of the join reads it
#: in id order before it updates a row it holds.)
_PG_NUMBER = (
    "WITH locked AS MATERIALIZED"
    " (SELECT id FROM sessions WHERE id = ANY($1::varchar[]) ORDER BY id FOR UPDATE)"
    " UPDATE sessions AS s SET last_seq = s.last_seq + c.n"
    " FROM unnest($1::varchar[], $2::int[]) AS c(id, n)"
    " WHERE s.id = c.id AND s.id IN (SELECT id FROM locked)"
    " RETURNING s.id, s.last_seq"
)


def _number_on_postgresql(
    connection: Connection, counts: dict[str, int], relay: PgRelay | None
) -> dict[str, int]:
    """``_number`` in one round trip; with a relay, the same ``RETURNING``
    tells the other replicas."""
    cursor = raw_cursor(connection)
    ids = sorted(counts)
    parameters: tuple[Any, ...] = (ids, [counts[session_id] for session_id in ids])
    statement = _PG_NUMBER
    if relay is not None:
        statement += ", " + relay.announcement_sql("$3", "s.id", "s.last_seq")
        parameters += (relay.prefix,)
    cursor.execute(statement, parameters)
    return {row[0]: row[1] for row in cursor.fetchall()}


class EventStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        hub: Hub,
        metrics: Metrics,
        transactions: Transactions,
        *,
        single_writer: bool,
        relay: PgRelay | None = None,
    ) -> None:
        self._sessions = sessions
        self._hub = hub
        self._metrics = metrics
        # SQLite has one writer anyway: queueing here is cheaper than its
        # busy-wait. PostgreSQL serialises per session on the row lock.
        self._global_lock: asyncio.Lock | None = asyncio.Lock() if single_writer else None
        #: on PostgreSQL: how other replicas learn of the events stored here
        self._relay = relay
        self._transactions = transactions
        self._session_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._openings: Coalescing[_Opening, SocketStart | None] = Coalescing(self._open_together)

    def _lock(self, session_id: str) -> asyncio.Lock:
        if self._global_lock is not None:
            return self._global_lock
        lock = self._session_locks.get(session_id)
        if lock is None:
            # Weakly held: a session's lock lives only while someone uses it.
            lock = self._session_locks[session_id] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def write(self, session_id: str) -> AsyncIterator[WriteTx]:
        async with self._lock(session_id):
            with tracing.child_span("store.write"):
                async with self._sessions() as db:
                    tx = WriteTx(db, session_id)
                    async with db.begin():
                        yield tx
                        rows = await self._number_many(db, [tx])
                        if rows:
                            await db.execute(insert(Event), rows)
            if tx.stored:
                self._publish({session_id: tx.stored})
        await _run_callbacks([tx])

    @asynccontextmanager
    async def write_group(self) -> AsyncIterator[WriteGroup]:
        """One transaction for changes in many sessions (group commit).

        Runner ingest funnels every runner's frames through one of these at a
        time: a single commit and a single multi-row INSERT for whatever all
        runners sent meanwhile, instead of a transaction per runner.
        """
        async with self._global_lock or contextlib.nullcontext():
            with tracing.child_span("store.write"):
                async with self._sessions() as db:
                    group = WriteGroup(db)
                    merged: list[WriteTx] = []
                    async with db.begin():
                        yield group
                        merged = group.by_session()
                        rows = await self._number_many(db, merged)
                        if rows:
                            await db.execute(insert(Event), rows)
            self._publish({tx.session_id: tx.stored for tx in merged if tx.stored})
        await _run_callbacks(group.txs)

    async def close(self) -> None:
        await self._transactions.close()

    async def write_rows(self, work: Callable[[Connection, Numberer], RowWork[T]]) -> T:
        """Run a whole write as one synchronous function (``db.transactions``).

        ``work`` gets a Core connection in a transaction and ``number``, which
        gives sessions their seqs; it returns its result and the event rows it
        inserted per session, which are published after the commit.
        """
        async with self._global_lock or contextlib.nullcontext():
            with tracing.child_span("store.write"):
                result, stored = await self._transactions.run(
                    lambda connection: work(connection, self._number)
                )
        self._publish(stored)
        return result

    def _number(self, connection: Connection, counts: dict[str, int]) -> dict[str, int]:
        """Bump each session's ``last_seq`` by its count; returns the new
        ``last_seq`` of each session that exists."""
        if connection.dialect.name == "sqlite":
            return _number_on_sqlite(connection, counts)
        return _number_on_postgresql(connection, counts, self._relay)

    async def _number_many(self, db: AsyncSession, txs: list[WriteTx]) -> list[dict[str, Any]]:
        """Give the drafts of ``txs`` their seqs."""
        counts = {tx.session_id: len(tx.drafts) for tx in txs if tx.drafts}
        if not counts:
            return []
        last_seqs = await db.run_sync(lambda session: self._number(session.connection(), counts))
        rows: list[dict[str, Any]] = []
        for tx in txs:
            if not tx.drafts:
                continue
            if tx.session_id not in last_seqs:
                raise NotFound("session not found")
            rows.extend(self._rows(tx, last_seqs[tx.session_id] - len(tx.drafts) + 1))
        return rows

    def _rows(self, tx: WriteTx, first: int) -> list[dict[str, Any]]:
        tx.stored = [
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
        return tx.stored

    def _publish(self, stored: dict[str, list[dict[str, Any]]]) -> None:
        """Fan out what one commit stored: one span for all its sessions."""
        if not stored:
            return
        with tracing.child_span("hub.fanout") as span:
            for session_id, rows in stored.items():
                self._publish_rows(session_id, rows)
            if span is not None:
                span.set_attributes(
                    {
                        "cmbtask.sessions": len(stored),
                        "cmbtask.events": sum(len(rows) for rows in stored.values()),
                        "cmbtask.subscribers": sum(self._hub.subscriber_count(sid) for sid in stored),
                    }
                )

    def _publish_rows(self, session_id: str, rows: list[dict[str, Any]]) -> None:
        items: list[Stored | Poke] = []
        for row in rows:
            text = jsontext.dumps(
                envelope(row["seq"], session_id, row["task_id"], row["type"], row["ts"], row["data"])
            )
            items.append(Stored(row["seq"], text, text_frame(text)))
        self._metrics.events_in.inc(len(items))
        self._hub.publish(session_id, items)

    async def page(
        self, session_id: str, after: int, limit: int, *, until: int | None = None
    ) -> list[dict[str, Any]]:
        """Stored events with ``after < seq`` (and ``seq <= until``), oldest first."""
        async with self._sessions() as db:
            rows = await db.execute(_page_query(session_id, after, limit, until))
            return _envelopes(session_id, rows)

    async def read_rows(self, work: Callable[[Connection], T]) -> T:
        """Run ``work``, which only reads, as one synchronous function in one
        snapshot (``db.transactions``): one hop for a read of several statements."""
        return await self._transactions.read(work)

    async def opening(self, session_id: str, after: int, limit: int) -> SocketStart | None:
        """What a client socket needs to open, in one read: the session's owner
        and ``last_seq``, and the first page after ``after`` (up to ``last_seq``);
        None when there is no such session. Sockets that open together (a
        gateway's clients coming back after a restart) share one read, their
        sessions looked up in one statement."""
        return await self._openings(_Opening(session_id, after, limit))

    async def _open_together(self, openings: list[_Opening]) -> list[SocketStart | None]:
        return await self._transactions.read(partial(_read_openings, openings=openings))


#: bound parameters per statement, well under SQLite's limit
_IDS_PER_STATEMENT = 500


class _Opening(NamedTuple):
    session_id: str
    after: int
    limit: int


def _read_openings(connection: Connection, openings: list[_Opening]) -> list[SocketStart | None]:
    ids = sorted({opening.session_id for opening in openings})
    found: dict[str, tuple[str, int]] = {}
    for first in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = ids[first : first + _IDS_PER_STATEMENT]
        query = select(_sessions.c.id, _sessions.c.owner, _sessions.c.last_seq).where(
            _sessions.c.id.in_(chunk)
        )
        found.update((str(row[0]), (str(row[1]), int(row[2]))) for row in connection.execute(query))
    starts: list[SocketStart | None] = []
    for session_id, after, limit in openings:
        if session_id not in found:
            starts.append(None)
            continue
        owner, last_seq = found[session_id]
        if after >= last_seq or limit <= 0:
            starts.append(SocketStart(owner, last_seq, []))
            continue
        rows = connection.execute(_page_query(session_id, after, limit, last_seq))
        starts.append(SocketStart(owner, last_seq, _envelopes(session_id, rows)))
    return starts


class SocketStart(NamedTuple):
    owner: str
    last_seq: int
    #: the first page of the backlog the socket asked for
    page: list[dict[str, Any]]


def _page_query(session_id: str, after: int, limit: int, until: int | None) -> Select[Any]:
    events = _events
    conditions = [events.c.session_id == session_id, events.c.seq > after]
    if until is not None:
        conditions.append(events.c.seq <= until)
    return (
        select(events.c.seq, events.c.task_id, events.c.type, events.c.ts, events.c.data)
        .where(*conditions)
        .order_by(events.c.seq)
        .limit(limit)
    )


def _envelopes(session_id: str, rows: Iterable[Any]) -> list[dict[str, Any]]:
    return [envelope(seq, session_id, task_id, type_, ts, data) for seq, task_id, type_, ts, data in rows]
