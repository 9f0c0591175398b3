"""Registering kubectl-made CmbTasks is idempotent: a gateway that died after
registering an object but before labelling it finds the same task again, so
the object never gets a second task (and so never a second pod). And it goes
through the gateway's own services: a client already watching the named
session sees the task arrive, and the dispatcher is woken for it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.db.models import Approval, Task
from cmbtask_gateway.executors.k8s_decisions import KubectlDecision
from cmbtask_gateway.executors.k8s_records import ImportedIds
from cmbtask_gateway.hub import Stored
from cmbtask_protocol import Decision, DecisionEventReason, SessionCreate
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


async def _pending(gateway: Gateway, task_id: str, session_id: str, **fields: Any) -> str:
    """An approval the task's runner asked for (as the ingest would store it)."""
    approval_id = uuid.uuid4().hex
    row = {
        "id": approval_id, "session_id": session_id, "task_id": task_id, "owner": "alice", "kind": "plan",
        "prompt": "run the plan?", "options": ["approve", "reject"], "allow_text": False, "context": {},
        "status": "pending", "on_timeout": "reject", **fields,
    }  # fmt: skip
    async with gateway.sessions_factory() as db:
        db.add(Approval(**row))
        await db.commit()
    return approval_id


def _kubectl(decision: Decision, by: str = "kubernetes:bob", **extra: Any) -> KubectlDecision:
    return KubectlDecision(decision, extra.get("text"), extra.get("approval"), by)


async def test_a_kubectl_decision_resolves_once_through_the_approval_service(gateway: Gateway) -> None:
    task_id, session_id = await gateway.records.register("alice", "k", str(uuid.uuid4()), SPEC)
    none_yet = await gateway.records.decide(task_id, _kubectl(Decision.APPROVE))
    assert none_yet.reason == DecisionEventReason.IGNORED and "no approval" in none_yet.message
    approval_id = await _pending(gateway, task_id, session_id)
    watcher = gateway.hub.subscribe(session_id)
    applied = await gateway.records.decide(task_id, _kubectl(Decision.APPROVE))
    assert applied.reason == DecisionEventReason.APPLIED, applied
    assert (
        applied.message
        == f"decision approve by kubernetes:bob applied: approval approved plan/{approval_id[:8]}"
    )
    [view] = await gateway.approvals.list("alice", None)
    assert (view.status.value, view.resolved_by) == ("approved", "kubernetes:bob")
    event = json.loads(watcher.queue.get_nowait().text)  # type: ignore[union-attr]
    assert event["type"] == "approval.resolved" and event["data"]["resolved_by"] == "kubernetes:bob"
    # the same annotation again, by someone else: reported, not applied
    again = await gateway.records.decide(task_id, _kubectl(Decision.REJECT, by="kubernetes:carol"))
    assert again.reason == DecisionEventReason.IGNORED
    assert "no longer pending (it is approved by kubernetes:bob)" in again.message
    [still] = await gateway.approvals.list("alice", None)
    assert (still.status.value, still.resolved_by) == ("approved", "kubernetes:bob")
    shown = await gateway.records.approvals_by_id([approval_id])
    assert shown[approval_id]["summary"] == f"approved plan/{approval_id[:8]}"
    assert shown[approval_id]["resolvedBy"] == "kubernetes:bob"


async def test_a_decision_the_approval_does_not_offer_is_refused(gateway: Gateway) -> None:
    task_id, session_id = await gateway.records.register("alice", "k", str(uuid.uuid4()), SPEC)
    approval_id = await _pending(gateway, task_id, session_id)
    refused = await gateway.records.decide(task_id, _kubectl(Decision.MODIFY, text="other plan"))
    assert refused.reason == DecisionEventReason.REFUSED and "not offered" in refused.message
    wrong = await gateway.records.decide(task_id, _kubectl(Decision.APPROVE, approval="0000000000"))
    assert wrong.reason == DecisionEventReason.IGNORED and "approval 0000000000" in wrong.message
    targeted = await gateway.records.decide(task_id, _kubectl(Decision.REJECT, approval=approval_id[:8]))
    assert targeted.reason == DecisionEventReason.APPLIED
    [view] = await gateway.approvals.list("alice", None)
    assert view.status.value == "rejected"


async def test_the_status_shows_each_tasks_latest_approval(gateway: Gateway) -> None:
    task_id, session_id = await gateway.records.register("alice", "k", str(uuid.uuid4()), SPEC)
    async with gateway.sessions_factory() as db:
        task = await db.get(Task, task_id)
        assert task is not None
        task.executor, task.handle, task.phase = "kubernetes", "ns/k", "waiting_approval"
        await db.commit()
    t0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    await _pending(gateway, task_id, session_id, status="approved", resolved_by="bob", created_at=t0)
    latest = await _pending(gateway, task_id, session_id, created_at=t0 + timedelta(seconds=5),
                            expires_at=t0 + timedelta(hours=1))  # fmt: skip
    assert await gateway.records.wanted_statuses("other") == {}
    [(name, wanted)] = (await gateway.records.wanted_statuses("ns")).items()
    assert name == "k" and wanted["phase"].value == "waiting_approval"
    assert wanted["approval"] == {
        "id": latest, "kind": "plan", "prompt": "run the plan?", "options": ["approve", "reject"],
        "state": "pending", "expiresAt": "2026-12-02T13:00:00Z", "resolvedBy": None,
        "summary": f"pending plan/{latest[:8]}",
    }  # fmt: skip
