"""What the watchdog keeps per cancelled task lasts as long as the task: a
long-lived gateway does not collect the ids of every task it ever stopped."""

from __future__ import annotations

import asyncio

import pytest
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.db.models import Task
from cmbtask_protocol import SessionCreate, TaskCreate, TaskPhase


async def _started_task(gateway: Gateway) -> str:
    session = await gateway.sessions.create("ada", SessionCreate(title="stopped"))
    task = await gateway.tasks.submit("ada", session.id, TaskCreate(engine="demo"))
    [claimed] = await gateway.tasks.start_wave(10, "local")
    await gateway.tasks.set_handles({claimed.id: "runner-1"})
    return task.id


async def test_a_stop_is_asked_once_while_the_task_lives_and_forgotten_when_it_ends(
    built_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = built_gateway
    stops: list[str] = []

    async def cancel(handle: str, *, grace_s: float) -> None:
        stops.append(handle)

    monkeypatch.setattr(gateway.executor, "cancel", cancel)
    task_id = await _started_task(gateway)
    await gateway.tasks.request_cancel(task_id, (await gateway.tasks.get("ada", task_id)).session_id, "no")
    for _ in range(2):  # the watchdog passes while the runner is still stopping
        await gateway.dispatcher.watch_once()
        await asyncio.sleep(0)
    assert stops == ["runner-1"]
    # The runner honoured the cancel and reported it: the task ended without the watchdog.
    async with gateway.sessions_factory.begin() as db:
        row = await db.get(Task, task_id)
        assert row is not None
        row.phase = TaskPhase.CANCELLED.value
    await gateway.dispatcher.watch_once()
    assert task_id not in gateway.dispatcher._stopping
    assert task_id not in gateway.dispatcher._cancel_seen
