"""Async engine and session factory, tuned per database.

SQLite runs in WAL mode with a busy timeout so that readers never block the
single writer; foreign keys are switched on (SQLite leaves them off).
PostgreSQL connections are checked before use (a restarted server leaves the
pool's connections dead) and a connection attempt gives up after
``CONNECT_TIMEOUT_S``, so nothing waits minutes on a server that is gone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

__all__ = ["DATABASE_UNAVAILABLE", "make_engine", "make_sessionmaker", "sqlite_pragmas"]

#: what a statement raises when the database cannot be reached (the drivers'
#: socket errors mostly come wrapped in SQLAlchemy's, not always)
DATABASE_UNAVAILABLE = (SQLAlchemyError, OSError, TimeoutError)
CONNECT_TIMEOUT_S = 5.0


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=8, max_overflow=8)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        pool_use_lifo=True,
        pool_timeout=10,
        connect_args={"timeout": CONNECT_TIMEOUT_S},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
