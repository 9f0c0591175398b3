"""Fresh databases for tests: a SQLite file, or a new PostgreSQL database.

PostgreSQL comes from ``CMBTASK_TEST_PG_URL`` (``scripts/postgres.sh`` starts
a server and prints it). When CI asks for it and it is missing, tests fail
instead of silently running on SQLite only.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

__all__ = ["BACKENDS", "fresh_database"]


def _backends() -> list[str]:
    wanted = os.environ.get("CMBTASK_TEST_DBS")
    if wanted:
        return [name.strip() for name in wanted.split(",") if name.strip()]
    return ["sqlite", "postgresql"] if os.environ.get("CMBTASK_TEST_PG_URL") else ["sqlite"]


BACKENDS = _backends()


@contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'cmbtask.db'}"
        return
    import psycopg2

    base = os.environ.get("CMBTASK_TEST_PG_URL")
    if not base:
        raise RuntimeError("CMBTASK_TEST_PG_URL is not set: run scripts/postgres.sh and export it")
    url = make_url(base)
    name = f"cmbtask_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    )
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield url.set(database=name).render_as_string(hide_password=False)
        _drop(admin, name)
    finally:
        admin.close()


def _drop(admin: Any, name: str, attempts: int = 20) -> None:
    """DROP … WITH (FORCE) ends the test's own leftover connections; a server
    process of another role in the database (an autovacuum worker) is waited
    out, a bounded number of times, if this role may not end it."""
    import psycopg2

    for attempt in range(attempts):
        try:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg2.errors.InsufficientPrivilege:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
