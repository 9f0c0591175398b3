"""Registering kubectl-made CmbTasks is idempotent: a gateway that died after
registering an object but before labelling it finds the same task again, so
the object never gets a second task (and so never a second pod)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from cmbtask_gateway.db.migrate import upgrade
from cmbtask_gateway.executors.k8s_records import ImportedIds, Records
from cmbtask_gateway.services.sessions import SessionService
from cmbtask_gateway.settings import Settings
from cmbtask_protocol import SessionCreate
from sqlalchemy import create_engine, text

SPEC = {"engine": "demo", "mode": "one-shot", "prompt": "hello", "params": {"steps": 1}}


def _count(database_url: str, table: str) -> int:
    engine = create_engine(database_url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg2"))
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


async def _records(database_url: str, tmp_path: Path) -> Records:
    await asyncio.to_thread(upgrade, database_url)  # alembic runs its own event loop
    return Records(Settings(database_url=database_url, data_dir=tmp_path))


async def test_registering_the_same_object_twice_gives_one_task(database_url: str, tmp_path: Path) -> None:
    records = await _records(database_url, tmp_path)
    uid = str(uuid.uuid4())
    try:
        first = await records.register("alice", "from-kubectl", uid, SPEC)
        again = await records.register("alice", "from-kubectl", uid, SPEC)
        other = await records.register("alice", "another", str(uuid.uuid4()), SPEC)
    finally:
        await records.close()
    assert first == again == (ImportedIds(uid).task_id, ImportedIds(uid).session_id)
    assert other[0] != first[0] and other[1] != first[1]
    assert _count(database_url, "tasks") == 2
    assert _count(database_url, "sessions") == 2


async def test_a_session_made_before_a_crash_is_reused(database_url: str, tmp_path: Path) -> None:
    records = await _records(database_url, tmp_path)
    uid = str(uuid.uuid4())
    ids = ImportedIds(uid)
    sessions = SessionService(records._db)  # the half-done registration: a session, no task
    await sessions.create("alice", SessionCreate(title="kubectl: half"), session_id=ids.session_id)
    try:
        task_id, session_id = await records.register("alice", "half", uid, SPEC)
    finally:
        await records.close()
    assert (task_id, session_id) == (ids.task_id, ids.session_id)
    assert _count(database_url, "sessions") == 1 and _count(database_url, "tasks") == 1


async def test_a_named_session_is_used_as_is(database_url: str, tmp_path: Path) -> None:
    records = await _records(database_url, tmp_path)
    try:
        made = await SessionService(records._db).create("alice", SessionCreate(title="mine"))
        _, session_id = await records.register(
            "alice", "x", str(uuid.uuid4()), {**SPEC, "sessionId": made.id}
        )
    finally:
        await records.close()
    assert session_id == made.id
    assert _count(database_url, "sessions") == 1
