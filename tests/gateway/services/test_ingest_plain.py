"""The Core path of runner ingest, on a real database: several runners'
batches in one transaction, each stored once with gap-free seqs, resends
skipped, a gap or an unknown task refused for its batch only, a bad payload
stored as an ``error`` event, publication only after the commit; a task's
start, step and plan change its rows as the ORM path does."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import pytest
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.errors import Conflict, GatewayError, NotFound
from cmbtask_gateway.services.ingest_plain import PlainBatch, is_plain, store_plain
from cmbtask_protocol import RunnerEvent, RunnerStateSave, SessionCreate, TaskCreate


@pytest.fixture
def gateway(built_gateway: Gateway) -> Gateway:
    return built_gateway


async def _task(gateway: Gateway, session_id: str | None = None) -> tuple[str, str]:
    if session_id is None:
        session_id = (await gateway.sessions.create("alice", SessionCreate(title="plain"))).id
    task = await gateway.tasks.submit("alice", session_id, TaskCreate(engine="demo"))
    return task.id, session_id


def _line(rseq: int, text: str) -> RunnerEvent:
    return RunnerEvent(type="event", rseq=rseq, event_type="output", data={"stream": "stdout", "text": text})


async def _store(gateway: Gateway, batches: list[PlainBatch]) -> list[int | GatewayError]:
    return await gateway.store.write_rows(partial(store_plain, batches=batches))


async def _events(gateway: Gateway, session_id: str) -> list[dict[str, Any]]:
    return await gateway.store.page(session_id, 0, 1000)


def _event(rseq: int, event_type: str, **data: Any) -> RunnerEvent:
    return RunnerEvent(type="event", rseq=rseq, event_type=event_type, data=data)


def test_a_tasks_end_approvals_and_state_saves_are_left_to_the_orm_path() -> None:
    assert is_plain([_line(1, "a"), _event(2, "cost"), _event(3, "task.started", engine="demo", mode="x")])
    assert is_plain([_event(1, "plan.proposed", steps=[]), _event(2, "step.started", step=1, total=1)])
    assert not is_plain([_line(1, "a"), RunnerEvent(type="event", rseq=2, event_type="task.succeeded")])
    assert not is_plain([RunnerStateSave(type="state.save", rseq=1, state={})])


async def test_batches_of_many_runners_are_stored_once_in_seq_order(gateway: Gateway) -> None:
    first, session_id = await _task(gateway)
    second, _ = await _task(gateway, session_id)  # two tasks of one session (not running: no matter here)
    other, other_session = await _task(gateway)
    acks = await _store(
        gateway,
        [
            PlainBatch(first, session_id, [_line(1, "a1"), _line(2, "a2")]),
            PlainBatch(other, other_session, [_line(1, "o1")]),
            PlainBatch(second, session_id, [_line(1, "b1")]),
        ],
    )
    assert acks == [2, 1, 1]
    # A resend overlapping what is stored: only the new frame is stored.
    assert await _store(gateway, [PlainBatch(first, session_id, [_line(2, "a2"), _line(3, "a3")])]) == [3]
    events = await _events(gateway, session_id)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    outputs = [(event["task_id"], event["data"]["text"]) for event in events if event["type"] == "output"]
    assert outputs == [(first, "a1"), (first, "a2"), (second, "b1"), (first, "a3")]
    assert [
        e["data"].get("text") for e in await _events(gateway, other_session) if e["type"] == "output"
    ] == ["o1"]
    assert (await gateway.tasks.get("alice", first)).model_dump()["id"] == first


async def test_a_gap_or_an_unknown_task_fails_only_its_own_batch(gateway: Gateway) -> None:
    task_id, session_id = await _task(gateway)
    other, other_session = await _task(gateway)
    acks = await _store(
        gateway,
        [
            PlainBatch(task_id, session_id, [_line(2, "skips 1")]),
            PlainBatch("no-such-task", session_id, [_line(1, "x")]),
            PlainBatch(other, session_id, [_line(1, "wrong session")]),
            PlainBatch(other, other_session, [_line(1, "fine")]),
        ],
    )
    assert isinstance(acks[0], Conflict) and "rseq 2 skips 1" in acks[0].message
    assert isinstance(acks[1], NotFound) and isinstance(acks[2], NotFound)
    assert acks[3] == 1
    assert [e["type"] for e in await _events(gateway, session_id)] == ["task.queued"]


async def test_a_bad_payload_is_stored_as_an_error_event(gateway: Gateway) -> None:
    task_id, session_id = await _task(gateway)
    bad = RunnerEvent(type="event", rseq=1, event_type="output", data={"stream": "nowhere", "text": "x"})
    assert await _store(gateway, [PlainBatch(task_id, session_id, [bad])]) == [1]
    last = (await _events(gateway, session_id))[-1]
    assert last["type"] == "error" and last["data"]["code"] == "invalid_event"


async def test_a_deleted_sessions_runner_is_refused_and_the_others_stored(gateway: Gateway) -> None:
    doomed, doomed_session = await _task(gateway)
    kept, kept_session = await _task(gateway)
    subscriber = gateway.hub.subscribe(kept_session)
    # Both batches reach the writer in one group (applied side by side).
    await gateway.sessions.delete("alice", doomed_session)
    results = await asyncio.gather(
        gateway.ingest.apply(doomed, doomed_session, [_line(1, "lost")]),
        gateway.ingest.apply(kept, kept_session, [_line(1, "kept")]),
        return_exceptions=True,
    )
    assert isinstance(results[0], NotFound)
    assert not isinstance(results[1], BaseException) and results[1].acked_rseq == 1
    assert [e["data"].get("text") for e in await _events(gateway, kept_session)][-1] == "kept"
    assert subscriber.queue.qsize() == 1  # published once, after the commit


async def test_a_start_a_plan_and_a_step_change_the_task_and_session_rows(gateway: Gateway) -> None:
    task_id, session_id = await _task(gateway)
    [claimed] = await gateway.tasks.start_wave(1, "local")
    assert claimed.id == task_id
    frames = [
        _event(1, "task.started", engine="demo", mode="one-shot", pid=7, attempt=5),
        _event(2, "plan.proposed", steps=[{"title": "fit"}, {"title": "plot"}]),
        _event(3, "step.started", step=2, total=2, title="plot"),
    ]
    assert await _store(gateway, [PlainBatch(task_id, session_id, frames)]) == [3]
    task = await gateway.tasks.get("alice", task_id)
    assert task.phase == "running" and task.started_at is not None
    session = await gateway.sessions.get("alice", session_id)
    assert (session.phase, session.step) == ("running", 2)
    assert [step["title"] for step in session.plan or []] == ["fit", "plot"]
    started = next(e for e in await _events(gateway, session_id) if e["type"] == "task.started")
    assert started["data"]["attempt"] == 1  # the gateway's count, not the runner's
    # a resent start changes nothing more, and a running task stays running
    again = [_event(4, "task.started", engine="demo", mode="one-shot")]
    assert await _store(gateway, [PlainBatch(task_id, session_id, again)]) == [4]
    assert (await gateway.tasks.get("alice", task_id)).started_at == task.started_at
