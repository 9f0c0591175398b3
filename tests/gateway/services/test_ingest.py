"""Runner ingest on its own, on a real database: frames stored once each, a
gap refused, the lifecycle followed (started, approval, final), a second
final event ignored, state saves checked against their version."""

from __future__ import annotations

from typing import Any

import pytest
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.errors import Conflict
from cmbtask_protocol import (
    CANCEL_TIMEOUT,
    RunnerApprovalRequest,
    RunnerEvent,
    RunnerStateSave,
    SessionCreate,
    TaskCreate,
    signal_reason,
)


@pytest.fixture
def gateway(built_gateway: Gateway) -> Gateway:
    return built_gateway


async def _task(gateway: Gateway) -> tuple[str, str]:
    session = await gateway.sessions.create("alice", SessionCreate(title="ingest"))
    task = await gateway.tasks.submit("alice", session.id, TaskCreate(engine="demo"))
    return task.id, session.id


def _event(rseq: int, event_type: str, **data: Any) -> RunnerEvent:
    return RunnerEvent(type="event", rseq=rseq, event_type=event_type, data=data)


async def _types(gateway: Gateway, session_id: str) -> list[str]:
    return [event["type"] for event in await gateway.store.page(session_id, 0, 100)]


async def test_frames_are_stored_once_and_a_gap_is_refused(gateway: Gateway) -> None:
    task_id, session_id = await _task(gateway)
    started = _event(1, "task.started", engine="demo", mode="one-shot")
    line = _event(2, "output", stream="stdout", text="hello")
    result = await gateway.ingest.apply(task_id, session_id, [started, line])
    assert result.acked_rseq == 2
    again = await gateway.ingest.apply(task_id, session_id, [started, line])  # a resend after reconnect
    assert again.acked_rseq == 2
    with pytest.raises(Conflict, match="rseq 4 skips 3"):
        await gateway.ingest.apply(task_id, session_id, [_event(4, "output", stream="stdout", text="x")])
    assert await _types(gateway, session_id) == ["task.queued", "task.started", "output"]
    assert (await gateway.tasks.get("alice", task_id)).phase == "running"


async def test_the_lifecycle_is_followed_and_the_first_final_event_stands(gateway: Gateway) -> None:
    task_id, session_id = await _task(gateway)
    asking = RunnerApprovalRequest(type="approval.request", rseq=2, approval_id="approval-1", prompt="ok?")
    await gateway.ingest.apply(
        task_id, session_id, [_event(1, "task.started", engine="demo", mode="x"), asking]
    )
    assert (await gateway.tasks.get("alice", task_id)).phase == "waiting_approval"
    done = _event(3, "task.succeeded", reason="")
    result = await gateway.ingest.apply(task_id, session_id, [done, _event(4, "task.failed", reason="late")])
    assert result.finished and result.acked_rseq == 4
    view = await gateway.tasks.get("alice", task_id)
    assert view.phase == "succeeded" and view.finished_at is not None
    assert (await _types(gateway, session_id))[-2:] == ["task.succeeded", "approval.cancelled"]
    session = await gateway.sessions.get("alice", session_id)
    assert session.phase == "succeeded"


async def test_a_state_save_from_an_old_version_is_refused(gateway: Gateway) -> None:
    task_id, session_id = await _task(gateway)
    first = RunnerStateSave(type="state.save", rseq=1, state={"n": 1}, expected_version=0)
    stale = RunnerStateSave(type="state.save", rseq=2, state={"n": 2}, expected_version=0)
    result = await gateway.ingest.apply(task_id, session_id, [first, stale])
    assert [(reply.ok, reply.version) for reply in result.replies] == [(True, 1), (False, 1)]
    assert (await gateway.sessions.get("alice", session_id)).state_version == 1


async def test_a_runner_stopped_by_a_signal_fails_unless_a_cancel_was_requested(gateway: Gateway) -> None:
    terminated = {"reason": signal_reason("SIGTERM"), "signal": "SIGTERM"}
    ended: dict[str, tuple[str, str | None, str]] = {}
    for cancel in (None, "cancelled by alice", CANCEL_TIMEOUT):
        task_id, session_id = await _task(gateway)
        await gateway.ingest.apply(task_id, session_id, [_event(1, "task.started", engine="demo", mode="x")])
        if cancel is not None:  # recorded before any executor stops the runner
            await gateway.tasks.request_cancel(task_id, session_id, cancel)
        result = await gateway.ingest.apply(task_id, session_id, [_event(2, "task.failed", **terminated)])
        assert result.finished
        view = await gateway.tasks.get("alice", task_id)
        ended[str(cancel)] = (view.phase, view.reason, (await _types(gateway, session_id))[-1])
    assert ended == {
        "None": ("failed", signal_reason("SIGTERM"), "task.failed"),
        "cancelled by alice": ("cancelled", "cancelled by alice", "task.cancelled"),
        CANCEL_TIMEOUT: ("timed_out", "timed out", "task.timed_out"),
    }
    assert "SIGTERM" in ended["None"][1] and "no cancel" in ended["None"][1]
