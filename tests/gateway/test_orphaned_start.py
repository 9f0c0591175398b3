"""A task its gateway marked ``starting`` but died before launching (SIGKILL
between the two writes) is ended by whichever gateway watches next, instead
of blocking its session's queue forever."""

from __future__ import annotations

from datetime import timedelta

from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.db.models import Task, utcnow
from cmbtask_protocol import SessionCreate, TaskCreate


async def test_a_task_left_starting_without_a_runner_is_ended_after_the_start_timeout(
    built_gateway: Gateway,
) -> None:
    gateway = built_gateway
    session = await gateway.sessions.create("ada", SessionCreate(title="orphaned start"))
    task = await gateway.tasks.submit("ada", session.id, TaskCreate(engine="demo"))
    [claimed] = await gateway.tasks.start_wave(10, "local")
    assert claimed.id == task.id and (await gateway.tasks.get("ada", task.id)).phase == "starting"
    # The launching gateway died here: no handle was ever stored, no runner runs.
    async with gateway.sessions_factory.begin() as db:
        row = await db.get(Task, task.id)
        assert row is not None and row.handle is None
        row.created_at = utcnow() - timedelta(seconds=gateway.settings.start_timeout_s + 1)
    for _ in range(2):  # the first pass asks for the cancel, the next enforces it
        await gateway.dispatcher.watch_once()
    ended = await gateway.tasks.get("ada", task.id)
    assert ended.phase == "cancelled"
    assert "never connected" in (ended.reason or "")
