"""A session runs its tasks one at a time, in submission order, with real
runners under the local executor; across a gateway crash too. A session made
with ``parallel_tasks`` runs them side by side."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.runner.gateway_tasks import (
    LOCAL,
    all_events,
    kill_runners_under,
    new_session,
    submit,
    wait_event,
    wait_phase,
)
from tests.support.gateway import GatewayProcess

DEMO = {"steps": 2, "step_delay_s": 0.3, "lines_per_step": 1}


@pytest.fixture
def local_gateway(gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> Iterator[GatewayProcess]:
    yield gateway_factory(**LOCAL)
    kill_runners_under(tmp_path)  # only a failed test leaves any


def _lifetimes(gateway: GatewayProcess, session_id: str, task_ids: list[str]) -> list[tuple[int, int]]:
    """Per task: seq of its ``task.started`` and of its final event."""
    events = all_events(gateway, session_id)
    spans = []
    for task_id in task_ids:
        mine = [e for e in events if e.get("task_id") == task_id]
        started = next(e["seq"] for e in mine if e["type"] == "task.started")
        ended = next(e["seq"] for e in mine if e["type"] == "task.succeeded")
        spans.append((started, ended))
    return spans


def _times(task: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(task["started_at"]), datetime.fromisoformat(task["finished_at"])


async def _assert_one_after_another(gateway: GatewayProcess, session_id: str, ids: list[str]) -> None:
    ended = [await wait_phase(gateway, task_id, timeout_s=120) for task_id in ids]
    assert [task["phase"] for task in ended] == ["succeeded"] * len(ids)
    spans = _lifetimes(gateway, session_id, ids)
    for before, after in itertools.pairwise(spans):
        assert before[1] < after[0], f"a task started before the one ahead ended: {spans}"
    times = [_times(task) for task in ended]
    for before, after in itertools.pairwise(times):
        assert before[1] <= after[0], f"runner lifetimes overlap: {times}"


async def test_tasks_of_one_session_run_one_after_another(local_gateway: GatewayProcess) -> None:
    with local_gateway.client() as http:
        session_id = new_session(http)
        ids = [submit(http, session_id, engine="demo", params=DEMO)["id"] for _ in range(3)]
        assert [t["phase"] for t in http.get(f"/api/sessions/{session_id}/tasks").json()][1:] == [
            "queued",
            "queued",
        ]
    queued = [e for e in all_events(local_gateway, session_id) if e["type"] == "task.queued"]
    assert [e["data"].get("behind") for e in queued] == [None, ids[0], ids[1]]
    await _assert_one_after_another(local_gateway, session_id, ids)


async def test_order_holds_across_a_gateway_crash(local_gateway: GatewayProcess) -> None:
    slow = {"steps": 4, "step_delay_s": 0.5, "lines_per_step": 1}
    with local_gateway.client() as http:
        session_id = new_session(http)
        ids = [submit(http, session_id, engine="demo", params=slow)["id"] for _ in range(3)]
    await wait_event(local_gateway, session_id, "step.started")
    local_gateway.kill()
    local_gateway.start()
    await _assert_one_after_another(local_gateway, session_id, ids)


async def test_a_pending_approval_holds_the_next_task_and_cancel_removes_a_waiting_one(
    local_gateway: GatewayProcess,
) -> None:
    with local_gateway.client() as http:
        session_id = new_session(http)
        asking = submit(http, session_id, engine="demo", params={"steps": 1, "approve_plan": True})
        await wait_phase(local_gateway, asking["id"], {"waiting_approval"})
        dropped = submit(http, session_id, engine="demo", params=DEMO)
        kept = submit(http, session_id, engine="demo", params=DEMO)
        assert http.post(f"/api/tasks/{dropped['id']}/cancel").json()["phase"] == "cancelled"
        assert http.get(f"/api/tasks/{kept['id']}").json()["phase"] == "queued"
        (requested,) = await wait_event(local_gateway, session_id, "approval.requested")
        decided = http.post(
            f"/api/approvals/{requested['data']['approval_id']}/resolve", json={"decision": "approve"}
        )
        assert decided.status_code == 200, decided.text
    assert (await wait_phase(local_gateway, kept["id"], timeout_s=120))["phase"] == "succeeded"
    events = all_events(local_gateway, session_id)
    dropped_events = [e["type"] for e in events if e.get("task_id") == dropped["id"]]
    assert dropped_events == ["task.queued", "task.cancelled"], "a cancelled waiting task never ran"
    await _assert_one_after_another(local_gateway, session_id, [asking["id"], kept["id"]])


async def test_a_parallel_session_runs_a_task_beside_one_awaiting_approval(
    local_gateway: GatewayProcess,
) -> None:
    with local_gateway.client() as http:
        session_id = new_session(http, parallel_tasks=True)
        assert http.get(f"/api/sessions/{session_id}").json()["parallel_tasks"] is True
        asking = submit(http, session_id, engine="demo", params={"steps": 1, "approve_plan": True})
        await wait_phase(local_gateway, asking["id"], {"waiting_approval"})
        beside = submit(http, session_id, engine="demo", params=DEMO)
        assert (await wait_phase(local_gateway, beside["id"], timeout_s=120))["phase"] == "succeeded"
        assert http.get(f"/api/tasks/{asking['id']}").json()["phase"] == "waiting_approval"
        assert http.post(f"/api/tasks/{asking['id']}/cancel").status_code == 200
    queued = [e for e in all_events(local_gateway, session_id) if e["type"] == "task.queued"]
    assert all("behind" not in e["data"] for e in queued)
    assert (await wait_phase(local_gateway, asking["id"], timeout_s=60))["phase"] == "cancelled"
