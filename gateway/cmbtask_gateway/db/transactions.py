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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import sqlite_pragmas

__all__ = ["AsyncEngineTransactions", "SqliteThreadTransactions", "Transactions", "make_transactions"]

T = TypeVar("T")


class Transactions(Protocol):
    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction: committed if it returns, rolled back if it raises."""
        ...

    async def close(self) -> None: ...


class SqliteThreadTransactions:
    def __init__(self, url: str) -> None:
        sync_url = make_url(url).set(drivername="sqlite")
        self._engine = create_engine(sync_url, pool_size=1, max_overflow=0)
        event.listen(self._engine, "connect", sqlite_pragmas)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        #: held open by the thread: a pool checkout and a ``begin`` per
        #: transaction cost as much as the statements of a small one
        self._connection: Connection | None = None

    async def run(self, work: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._in_transaction, work)

    def _in_transaction(self, work: Callable[[Connection], T]) -> T:
        if self._connection is None:
            self._connection = self._engine.connect()
        # Begun explicitly, so that the commit reaches the driver even when the
        # work used only the driver's own cursor.
        with self._connection.begin():
            return work(self._connection)

    def _dispose(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._engine.dispose()

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._dispose)
        self._thread.shutdown(wait=True)


class AsyncEngineTransactions:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(self, work: Callable[[Connection], T]) -> T:
        async with self._engine.begin() as connection:
            return await connection.run_sync(work)

    async def close(self) -> None:
        return None


def make_transactions(url: str, engine: AsyncEngine) -> Transactions:
    if url.startswith("sqlite"):
        return SqliteThreadTransactions(url)
    return AsyncEngineTransactions(engine)
