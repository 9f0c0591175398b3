"""Registering kubectl-made CmbTasks is idempotent: a gateway that died after
registering an object but before labelling it finds the same task again, so
the object never gets a second task (and so never a second pod). And it goes
through the gateway's own services: a client already watching the named
session sees the task arrive, and the dispatcher is woken for it."""

from __future__ import annotations

import json
import uuid

import pytest
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.executors.k8s_records import ImportedIds
from cmbtask_gateway.hub import Stored
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


@pytest.fixture
def gateway(built_gateway: Gateway) -> Gateway:
    return built_gateway


async def test_registering_the_same_object_twice_gives_one_task(database_url: str, gateway: Gateway) -> None:
    records = gateway.records
    uid = str(uuid.uuid4())
    first = await records.register("alice", "from-kubectl", uid, SPEC)
    again = await records.register("alice", "from-kubectl", uid, SPEC)
    other = await records.register("alice", "another", str(uuid.uuid4()), SPEC)
    assert first == again == (ImportedIds(uid).task_id, ImportedIds(uid).session_id)
    assert other[0] != first[0] and other[1] != first[1]
    assert _count(database_url, "tasks") == 2
    assert _count(database_url, "sessions") == 2


async def test_a_session_made_before_a_crash_is_reused(database_url: str, gateway: Gateway) -> None:
    uid = str(uuid.uuid4())
    ids = ImportedIds(uid)
    # the half-done registration: a session, no task
    await gateway.sessions.create("alice", SessionCreate(title="kubectl: half"), session_id=ids.session_id)
    task_id, session_id = await gateway.records.register("alice", "half", uid, SPEC)
    assert (task_id, session_id) == (ids.task_id, ids.session_id)
    assert _count(database_url, "sessions") == 1 and _count(database_url, "tasks") == 1


async def test_a_named_session_is_used_as_is_and_its_watchers_see_the_task_live(
    database_url: str, gateway: Gateway
) -> None:
    made = await gateway.sessions.create("alice", SessionCreate(title="mine"))
    watcher = gateway.hub.subscribe(made.id)  # a client connected before the import
    assert not gateway.doorbell.rung
    task_id, session_id = await gateway.records.register(
        "alice", "x", str(uuid.uuid4()), {**SPEC, "sessionId": made.id}
    )
    assert session_id == made.id
    assert _count(database_url, "sessions") == 1
    delivered = watcher.queue.get_nowait()
    assert isinstance(delivered, Stored)
    assert json.loads(delivered.text) | {"ts": None} == {
        "v": 1,
        "seq": 1,
        "session_id": made.id,
        "task_id": task_id,
        "type": "task.queued",
        "ts": None,
        "data": {"engine": "demo", "mode": "one-shot", "prompt": "hello"},
    }
    assert gateway.doorbell.rung, "the dispatcher is woken for the imported task"
