"""Migrations on both databases: ``cmbtask db upgrade`` from empty to head,
``current``, ``downgrade`` back to nothing, upgrade again, and a check that
the models and the migrations describe the same schema.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from cmbtask_gateway.db.models import Base
from cmbtask_migrations import MIGRATION_LOCK_ID, SCRIPT_LOCATION
from sqlalchemy import Connection, Engine, create_engine, inspect, text

TABLES = {"sessions", "tasks", "events", "approvals", "api_tokens", "provider_keys", "user_settings"}


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


@pytest.fixture
def sync_engine(database_url: str) -> Iterator[Engine]:
    """The same database through a blocking driver, to look at it directly."""
    engine = create_engine(database_url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg2"))
    yield engine
    engine.dispose()


def _cmbtask_db(database_url: str, data_dir: Path, *args: str) -> str:
    env = {**os.environ, "CMBTASK_DATABASE_URL": database_url, "CMBTASK_LOG_FORMAT": "json"}
    result = subprocess.run(
        [sys.executable, "-m", "cmbtask_gateway.cli", "db", *args, "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_and_upgrade_again(database_url: str, sync_engine: Engine, tmp_path: Path) -> None:
    head = _head()
    assert _tables(sync_engine) == set()
    assert "(empty database)" in _cmbtask_db(database_url, tmp_path, "current")

    upgraded = _cmbtask_db(database_url, tmp_path, "upgrade")
    assert head in upgraded
    assert _tables(sync_engine) == TABLES
    assert f"{head} (head)" in _cmbtask_db(database_url, tmp_path, "current")
    # Upgrading an up-to-date database is a no-op.
    assert f"{head} (head)" in _cmbtask_db(database_url, tmp_path, "upgrade", "head")

    downgraded = _cmbtask_db(database_url, tmp_path, "downgrade", "base")
    assert "(empty database)" in downgraded
    assert _tables(sync_engine) == set()
    assert "(empty database)" in _cmbtask_db(database_url, tmp_path, "current")

    _cmbtask_db(database_url, tmp_path, "upgrade")
    assert _tables(sync_engine) == TABLES
    assert f"{head} (head)" in _cmbtask_db(database_url, tmp_path, "current")


def test_models_match_the_migrations(database_url: str, sync_engine: Engine, tmp_path: Path) -> None:
    _cmbtask_db(database_url, tmp_path, "upgrade")
    with sync_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_indexes_and_constraints_exist(database_url: str, sync_engine: Engine, tmp_path: Path) -> None:
    # The exactly-once and gap-free guarantees rest on these two constraints.
    _cmbtask_db(database_url, tmp_path, "upgrade")
    inspector = inspect(sync_engine)
    unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("events")}
    assert {("session_id", "seq"), ("task_id", "rseq")} <= unique
    foreign = {
        (fk["referred_table"], tuple(fk["constrained_columns"])) for fk in inspector.get_foreign_keys("tasks")
    }
    assert ("sessions", ("session_id",)) in foreign
    indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes("sessions")}
    assert ("owner", "created_at") in indexed


def test_concurrent_upgrades_on_postgresql_wait_for_each_other(
    database_url: str, sync_engine: Engine, tmp_path: Path
) -> None:
    """Two replicas' init containers upgrading one empty database at once: the
    advisory lock makes the second wait and then find nothing to do."""
    if sync_engine.dialect.name != "postgresql":
        pytest.skip("an embedded SQLite database has a single gateway")
    env = {**os.environ, "CMBTASK_DATABASE_URL": database_url, "CMBTASK_LOG_FORMAT": "json"}
    command = [sys.executable, "-m", "cmbtask_gateway.cli", "db", "upgrade"]
    with sync_engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        upgrades = [
            subprocess.Popen([*command, "--data-dir", str(tmp_path / f"d{n}")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for n in range(3)
        ]  # fmt: skip
        try:
            _wait_until_blocked(holder, len(upgrades))
            assert [p.poll() for p in upgrades] == [None] * len(upgrades)
            assert _tables(sync_engine) == set()
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            holder.commit()
        outputs = [p.communicate(timeout=120)[0] for p in upgrades]
    assert [p.returncode for p in upgrades] == [0] * len(upgrades), outputs
    assert _tables(sync_engine) == TABLES
    with sync_engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            _head()
        ]


def _wait_until_blocked(holder: Connection, count: int, timeout_s: float = 60) -> None:
    """Until ``count`` sessions wait for the migration lock (bounded)."""
    deadline = time.monotonic() + timeout_s
    query = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = :id")
    while time.monotonic() < deadline:
        if holder.execute(query, {"id": MIGRATION_LOCK_ID}).scalar_one() >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{count} upgrades never waited for the migration lock")
