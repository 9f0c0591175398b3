"""Retries with real runners under the local executor: a runner killed
mid-task is run again after its backoff and resumes from the session's
stored state; retries run out; cancelled and rejected tasks never run again;
a gateway killed during a backoff still retries, exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runner.gateway_tasks import (
    LOCAL,
    all_events,
    get_task,
    kill_runners_under,
    new_session,
    runner_pid,
    submit,
    wait_event,
    wait_phase,
)
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.slow

DEMO = {"steps": 6, "step_delay_s": 0.3, "lines_per_step": 1}


@pytest.fixture
def local_gateway(gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> Iterator[GatewayProcess]:
    yield gateway_factory(**LOCAL)
    kill_runners_under(tmp_path)  # only a failed test leaves any


def _mine(gateway: GatewayProcess, session_id: str, task_id: str) -> list[dict[str, Any]]:
    events = all_events(gateway, session_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "gap-free, in order"
    return [e for e in events if e.get("task_id") == task_id]


def _types(events: list[dict[str, Any]], *wanted: str) -> list[str]:
    return [e["type"] for e in events if e["type"] in wanted]


async def _kill_current_runner(gateway: GatewayProcess, task_id: str, signum: signal.Signals) -> int:
    with gateway.client() as http:
        pid = runner_pid(get_task(http, task_id))
    os.kill(pid, signum)
    return pid


async def _wait_started(gateway: GatewayProcess, session_id: str, attempt: int) -> None:
    """Until the runner of ``attempt`` has saved state at least once (it is mid-task)."""
    for _ in range(300):
        events = all_events(gateway, session_id)
        starts = [i for i, e in enumerate(events) if e["type"] == "task.started"]
        if len(starts) >= attempt and any(e["type"] == "state.saved" for e in events[starts[-1] :]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"attempt {attempt} never got under way")


async def test_a_sigkilled_runner_is_retried_and_finishes_on_attempt_two(
    local_gateway: GatewayProcess,
) -> None:
    with local_gateway.client() as http:
        session_id = new_session(http)
        task = submit(http, session_id, engine="demo", params=DEMO, retries=2, retry_backoff_s=0.5)
        assert (task["attempt"], task["retries"]) == (1, 2)
        await _wait_started(local_gateway, session_id, attempt=1)
        await _kill_current_runner(local_gateway, task["id"], signal.SIGKILL)
        retrying = await wait_event(local_gateway, session_id, "task.retrying")
        # Submitted during the backoff: it must wait for the retried task to end.
        behind = submit(http, session_id, engine="demo", params={"steps": 1, "step_delay_s": 0})
        during = get_task(http, task["id"])
        assert during["phase"] == "queued" and during["attempt"] == 2 and during["retry_at"]
    ended = await wait_phase(local_gateway, task["id"])
    assert ended["phase"] == "succeeded" and ended["attempt"] == 2, ended
    assert (await wait_phase(local_gateway, behind["id"]))["phase"] == "succeeded"

    [retry] = retrying
    assert retry["data"]["attempt"] == 2 and retry["data"]["retries"] == 2
    assert retry["data"]["delay_s"] == 0.5 and "killed" in retry["data"]["reason"]
    mine = _mine(local_gateway, session_id, task["id"])
    lifecycle = _types(mine, "task.queued", "task.started", "task.retrying", "task.succeeded", "task.failed")
    assert lifecycle == ["task.queued", "task.started", "task.retrying", "task.started", "task.succeeded"]
    assert [e["data"]["attempt"] for e in mine if e["type"] == "task.started"] == [1, 2]
    second = next(e for e in mine if e["type"] == "task.started" and e["data"]["attempt"] == 2)
    assert second["data"]["resumed_from_version"] >= 1, "attempt 2 resumed from the stored state"
    completed = [e["data"]["step"] for e in mine if e["type"] == "step.completed"]
    assert completed == list(range(1, 7)), "every step completed exactly once, in order"
    behind_started = next(
        e["seq"] for e in all_events(local_gateway, session_id)
        if e["type"] == "task.started" and e["task_id"] == behind["id"]
    )  # fmt: skip
    assert behind_started > mine[-1]["seq"], "the session ran one task at a time during the backoff"


async def test_retries_run_out_and_the_task_fails_with_the_reason(local_gateway: GatewayProcess) -> None:
    with local_gateway.client() as http:
        session_id = new_session(http)
        task = submit(
            http, session_id, engine="demo", params={**DEMO, "steps": 50}, retries=1, retry_backoff_s=0.2
        )
    await _wait_started(local_gateway, session_id, attempt=1)
    # SIGTERM from outside (a pod deleted or evicted): the runner reports the signal itself.
    await _kill_current_runner(local_gateway, task["id"], signal.SIGTERM)
    await _wait_started(local_gateway, session_id, attempt=2)
    await _kill_current_runner(local_gateway, task["id"], signal.SIGKILL)
    ended = await wait_phase(local_gateway, task["id"])
    assert ended["phase"] == "failed" and ended["attempt"] == 2, ended
    assert "killed" in ended["reason"] and "no retries left" in ended["reason"], ended["reason"]
    mine = _mine(local_gateway, session_id, task["id"])
    [retry] = [e for e in mine if e["type"] == "task.retrying"]
    assert retry["data"]["signal"] == "SIGTERM"
    assert _types(mine, "task.started", "task.retrying", "task.failed") == [
        "task.started",
        "task.retrying",
        "task.started",
        "task.failed",
    ]


async def test_cancelled_rejected_and_over_budget_tasks_are_never_retried(
    local_gateway: GatewayProcess,
) -> None:
    with local_gateway.client() as http:
        cancelled_session, rejected_session = new_session(http), new_session(http)
        budget_session = new_session(http)
        over_budget = submit(
            http,
            budget_session,
            engine="demo",
            params={**DEMO, "cost_usd_per_step": 0.2},
            max_cost_usd=0.3,
            retries=3,
            retry_backoff_s=0,
        )
        cancelled = submit(
            http, cancelled_session, engine="demo", params={**DEMO, "steps": 50}, retries=3, retry_backoff_s=0
        )
        rejected = submit(
            http,
            rejected_session,
            engine="demo",
            params={**DEMO, "approve_plan": True},
            retries=3,
            retry_backoff_s=0,
        )
        await _wait_started(local_gateway, cancelled_session, attempt=1)
        assert http.post(f"/api/tasks/{cancelled['id']}/cancel").status_code == 200
        [requested] = await wait_event(local_gateway, rejected_session, "approval.requested")
        approval_id = requested["data"]["approval_id"]
        answer = http.post(f"/api/approvals/{approval_id}/resolve", json={"decision": "reject"})
        assert answer.status_code == 200, answer.text
    assert (await wait_phase(local_gateway, cancelled["id"]))["phase"] == "cancelled"
    assert (await wait_phase(local_gateway, rejected["id"]))["phase"] == "failed"
    spent = await wait_phase(local_gateway, over_budget["id"])
    assert spent["phase"] == "failed" and "budget" in spent["reason"], spent
    await asyncio.sleep(2)  # a retry would be due at once (no backoff)
    ended = ((cancelled_session, cancelled), (rejected_session, rejected), (budget_session, over_budget))
    for session_id, task in ended:
        with local_gateway.client() as http:
            assert get_task(http, task["id"])["attempt"] == 1
        mine = _mine(local_gateway, session_id, task["id"])
        assert _types(mine, "task.started", "task.retrying") == ["task.started"], task["id"]


async def test_a_gateway_killed_during_the_backoff_still_retries_once(local_gateway: GatewayProcess) -> None:
    with local_gateway.client() as http:
        session_id = new_session(http)
        # the backoff must outlast the gateway's restart below, also on a loaded machine
        task = submit(http, session_id, engine="demo", params=DEMO, retries=1, retry_backoff_s=12)
    await _wait_started(local_gateway, session_id, attempt=1)
    await _kill_current_runner(local_gateway, task["id"], signal.SIGKILL)
    await wait_event(local_gateway, session_id, "task.retrying")
    local_gateway.kill()
    local_gateway.start()
    with local_gateway.client() as http:
        waiting = get_task(http, task["id"])
        assert waiting["phase"] == "queued" and waiting["attempt"] == 2, waiting
    ended = await wait_phase(local_gateway, task["id"])
    assert ended["phase"] == "succeeded" and ended["attempt"] == 2, ended
    mine = _mine(local_gateway, session_id, task["id"])
    assert _types(mine, "task.started", "task.retrying", "task.succeeded") == [
        "task.started",
        "task.retrying",
        "task.started",
        "task.succeeded",
    ]
    assert [e["data"]["step"] for e in mine if e["type"] == "step.completed"] == list(range(1, 7))


async def test_a_task_cancelled_during_its_backoff_is_not_run_again(local_gateway: GatewayProcess) -> None:
    with local_gateway.client() as http:
        session_id = new_session(http)
        task = submit(http, session_id, engine="demo", params=DEMO, retries=2, retry_backoff_s=30)
        await _wait_started(local_gateway, session_id, attempt=1)
        await _kill_current_runner(local_gateway, task["id"], signal.SIGKILL)
        await wait_event(local_gateway, session_id, "task.retrying")
        assert http.post(f"/api/tasks/{task['id']}/cancel").status_code == 200
        ended = get_task(http, task["id"])
    assert ended["phase"] == "cancelled" and ended["attempt"] == 2, ended
    mine = _mine(local_gateway, session_id, task["id"])
    assert _types(mine, "task.started", "task.retrying", "task.cancelled") == [
        "task.started",
        "task.retrying",
        "task.cancelled",
    ]
