"""Whole transactions run as one synchronous function, for the hot write path.

The ORM over an async driver pays, per statement, a greenlet switch and (on
aiosqlite) a hop to the driver's thread and back through the event loop's
self-pipe. A runner's event batch is four statements, so the hops cost more
than the SQL. Here the write is a plain function of a SQLAlchemy Core
``Connection``:

- SQLite: it runs in one dedicated thread on the stdlib ``sqlite3`` driver,
  so a transaction costs one hop, not one per statement. The thread is the
  only writer of this process anyway (SQLite has one writer).
- PostgreSQL: it runs through the async engine (``run_sync``); asyncpg pays a
  round trip per statement whatever the API, so only the ORM's cost is saved.

Reads that many sockets make at once (opening a client socket) take the same
shape through ``read``: on SQLite a second thread with its own connection
(WAL lets it read beside the writer), one hop per read instead of several.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ..coalescing import Coalescing
from .engine import sqlite_pragmas
from .worker_thread import WorkerThread

__all__ = ["AsyncEngineTransactions", "SqliteThreadTransactions", "Transactions", "make_transactions"]

T = TypeVar("T")


class Transactions(Protocol):
    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction: committed if it returns, rolled back if it raises."""
        ...

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work``, which only reads, in one transaction (one snapshot)."""
        ...

    async def close(self) -> None: ...


class SqliteThreadTransactions:
    def __init__(self, url: str) -> None:
        sync_url = make_url(url).set(drivername="sqlite")
        self._engine = create_engine(sync_url, pool_size=1, max_overflow=0)
        event.listen(self._engine, "connect", sqlite_pragmas)
        self._reads = create_engine(sync_url, pool_size=1, max_overflow=0)
        for engine in (self._engine, self._reads):
            event.listen(engine, "connect", sqlite_pragmas)
        self._thread = WorkerThread("sqlite-writer")
        self._reader = WorkerThread("sqlite-reader")
        #: held open by each thread: a pool checkout and a ``begin`` per
        #: transaction cost as much as the statements of a small one
        self._connections: dict[Engine, Connection] = {}

    async def run(self, work: Callable[[Connection], T]) -> T:
        return await self._thread.call(partial(self._in_transaction, self._engine, work))

    async def read(self, work: Callable[[Connection], T]) -> T:
        return await self._reader.call(partial(self._in_transaction, self._reads, work))

    def _in_transaction(self, engine: Engine, work: Callable[[Connection], T]) -> T:
        connection = self._connections.get(engine)
        if connection is None:
            connection = self._connections[engine] = engine.connect()
        # Begun explicitly, so that the commit reaches the driver even when the
        # work used only the driver's own cursor.
        with connection.begin():
            return work(connection)

    def _dispose(self, engine: Engine) -> None:
        if (connection := self._connections.pop(engine, None)) is not None:
            connection.close()
        engine.dispose()

    async def close(self) -> None:
        for thread, engine in ((self._thread, self._engine), (self._reader, self._reads)):
            await thread.call(partial(self._dispose, engine))
            thread.stop()


class AsyncEngineTransactions:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Reads that arrive together (200 clients connecting at once) share a
        # transaction: one checkout, one BEGIN and COMMIT for the lot, and the
        # pool does not grow a connection per waiting socket.
        self._reads: Coalescing[Callable[[Connection], Any], Any] = Coalescing(self._read_together)

    async def run(self, work: Callable[[Connection], T]) -> T:
        async with self._engine.begin() as connection:
            return await connection.run_sync(work)

    async def read(self, work: Callable[[Connection], T]) -> T:
        return cast(T, await self._reads(work))

    async def _read_together(self, works: list[Callable[[Connection], Any]]) -> list[Any]:
        if len(works) == 1:
            return [await self.run(works[0])]
        try:
            return await self.run(lambda connection: [work(connection) for work in works])
        except Exception:
            # A failed statement aborts PostgreSQL's transaction for the rest:
            # each read again alone, so that only the one that broke fails.
            return list(await asyncio.gather(*(self.run(work) for work in works), return_exceptions=True))

    async def close(self) -> None:
        return None


def make_transactions(url: str, engine: AsyncEngine) -> Transactions:
    if url.startswith("sqlite"):
        return SqliteThreadTransactions(url)
    return AsyncEngineTransactions(engine)
