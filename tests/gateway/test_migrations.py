"""Migrations on both databases: ``cmbtask db upgrade`` from empty to head,
``current``, ``downgrade`` back to nothing, upgrade again, and a check that
the models and the migrations describe the same schema.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from cmbtask_gateway.db.models import Base
from cmbtask_migrations import SCRIPT_LOCATION
from sqlalchemy import Engine, create_engine, inspect

TABLES = {"sessions", "tasks", "events", "approvals", "api_tokens"}


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
