"""The dispatcher with a recording executor: a wave claims what may start,
within ``max_concurrent_tasks`` and one task per session at a time; a
runner's ``task.started`` starts its task; and a cancel asked for a running
task stops its runner at once (the executor's ``cancel``), not at the
watchdog's next look — a runner that honours the cancel frame ends its task
first, and the watchdog, which watches unfinished tasks only, would never
stop its pod."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.db.migrate import upgrade
from cmbtask_gateway.executors.base import ExecutorStatus, LaunchRequest
from cmbtask_gateway.settings import Settings
from cmbtask_protocol import RunnerEvent, SessionCreate, TaskCreate


class _Recording:
    name = "recording"

    def __init__(self) -> None:
        self.launched: list[str] = []
        self.cancelled: list[str] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def launch(self, request: LaunchRequest) -> str:
        self.launched.append(request.task_id)
        return f"runner-of-{request.task_id}"

    async def cancel(self, handle: str, *, grace_s: float) -> None:
        self.cancelled.append(handle)

    async def inspect(self, handle: str) -> ExecutorStatus:
        return ExecutorStatus(handle=handle, alive=True)

    async def adopt(self, handles: Sequence[str]) -> list[ExecutorStatus]:
        return [ExecutorStatus(handle=handle, alive=True) for handle in handles]


@pytest.fixture
async def gateway(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Gateway, _Recording]]:
    await asyncio.to_thread(upgrade, database_url)
    executor = _Recording()
    settings = Settings(database_url=database_url, data_dir=tmp_path, max_concurrent_tasks=3)
    built = Gateway.build(settings, executor=executor)  # type: ignore[arg-type]
    yield built, executor
    await built.ingest.close()
    await built.store.close()
    await built.engine.dispose()


async def test_a_cancelled_runner_is_stopped_before_the_watchdog_looks(
    gateway: tuple[Gateway, _Recording],
) -> None:
    built, executor = gateway
    session = await built.sessions.create("ada", SessionCreate(title="cancel"))
    submitted = [await built.tasks.submit("ada", session.id, TaskCreate(engine="demo")) for _ in range(2)]
    other = await built.sessions.create("ada", SessionCreate(title="beside"))
    beside = await built.tasks.submit("ada", other.id, TaskCreate(engine="demo"))
    await built.dispatcher.dispatch_once()
    # one per session: the second task of the first session waits behind the first
    assert sorted(executor.launched) == sorted([submitted[0].id, beside.id])
    task = submitted[0]
    assert (await built.tasks.get("ada", task.id)).phase == "starting"
    started = RunnerEvent(
        type="event", rseq=1, event_type="task.started", data={"engine": "demo", "mode": "one-shot"}
    )
    await built.ingest.apply(task.id, session.id, [started])
    assert (await built.tasks.get("ada", task.id)).phase == "running"

    await built.tasks.cancel("ada", task.id)
    for _ in range(100):  # the stop runs in the background, right after the commit
        if executor.cancelled:
            break
        await asyncio.sleep(0.01)
    assert executor.cancelled == [f"runner-of-{task.id}"]
    # the runner honours the cancel and ends its task; the watchdog stops nobody twice
    cancelled = RunnerEvent(type="event", rseq=2, event_type="task.cancelled", data={"reason": "asked"})
    await built.ingest.apply(task.id, session.id, [cancelled])
    await built.dispatcher.watch_once()
    assert executor.cancelled == [f"runner-of-{task.id}"]
    assert (await built.tasks.get("ada", task.id)).phase == "cancelled"


async def test_a_wave_starts_no_more_than_the_concurrency_limit(gateway: tuple[Gateway, _Recording]) -> None:
    built, executor = gateway
    sessions = [await built.sessions.create("ada", SessionCreate(title=f"s{n}")) for n in range(5)]
    tasks = [await built.tasks.submit("ada", s.id, TaskCreate(engine="demo")) for s in sessions]
    await built.dispatcher.dispatch_once()
    assert executor.launched == [task.id for task in tasks[:3]]  # oldest first, three slots
    await built.dispatcher.dispatch_once()
    assert len(executor.launched) == 3  # no slot is free
    await built.tasks.cancel("ada", tasks[4].id)  # queued: it leaves the queue at once
    await built.tasks.cancel("ada", tasks[0].id)
    ended = RunnerEvent(type="event", rseq=1, event_type="task.cancelled", data={"reason": "asked"})
    await built.ingest.apply(tasks[0].id, sessions[0].id, [ended])
    await built.dispatcher.dispatch_once()
    assert executor.launched == [task.id for task in tasks[:4]]
    views = [await built.tasks.get("ada", task.id) for task in tasks]
    assert [view.phase for view in views] == ["cancelled", "starting", "starting", "starting", "cancelled"]
