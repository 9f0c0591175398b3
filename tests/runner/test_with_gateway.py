"""Real runner processes under a real gateway with the local executor.

Isolation, restarts, crashes, cancel, approvals from scripts and bad input,
end to end: REST in, events out, processes checked with psutil.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cmbtask_protocol import signal_reason

from tests.runner.gateway_tasks import (
    LOCAL,
    all_events,
    get_task,
    gone,
    kill_runners_under,
    new_session,
    output_text,
    runner_pid,
    submit,
    wait_event,
    wait_gone,
    wait_phase,
)
from tests.support.clients import SessionClient
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.slow

MARKER_SCRIPT = textwrap.dedent(
    """
    import logging, os, subprocess, sys
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    marker, count = os.environ["MARKER"], int(os.environ["COUNT"])
    for n in range(count):
        print(f"{marker} print {n}")
        sys.stdout.write(f"{marker} write {n}\\n")
        logging.info(f"{marker} log {n}")
    code = f"for n in range({count}): print('{marker} child', n)"
    subprocess.run([sys.executable, "-c", code], check=True)
    """
)

APPROVAL_SCRIPT = textwrap.dedent(
    """
    import json
    from cmbtask_runner import sdk
    outcome = sdk.request_approval("Proceed?", timeout_s=TIMEOUT)
    print("OUTCOME", json.dumps(outcome.__dict__))
    """
)


@pytest.fixture
def local_gateway(gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> Iterator[GatewayProcess]:
    yield gateway_factory(**LOCAL)
    kill_runners_under(tmp_path)  # only a failed test leaves any


async def test_isolation_five_tasks_each_line_once_and_unmixed(local_gateway: GatewayProcess) -> None:
    count, markers = 150, [f"M{n}x{os.urandom(3).hex()}" for n in range(5)]
    with local_gateway.client() as http:
        sessions = [new_session(http, marker) for marker in markers]
        tasks = [
            submit(
                http,
                session_id,
                engine="script",
                params={"code": MARKER_SCRIPT, "env": {"MARKER": marker, "COUNT": str(count)}},
            )
            for session_id, marker in zip(sessions, markers, strict=True)
        ]
    for task in tasks:
        assert (await wait_phase(local_gateway, task["id"], timeout_s=120))["phase"] == "succeeded"
    for session_id, marker in zip(sessions, markers, strict=True):
        lines = output_text(all_events(local_gateway, session_id)).splitlines()
        assert all(line.startswith(marker + " ") for line in lines), "only this task's own markers"
        for route in ("print", "write", "log", "child"):
            got = [line for line in lines if line.startswith(f"{marker} {route} ")]
            assert got == [f"{marker} {route} {n}" for n in range(count)], route
        assert len(lines) == 4 * count


async def test_gateway_sigkill_and_restart_mid_task(local_gateway: GatewayProcess) -> None:
    params = {"steps": 6, "step_delay_s": 0.6, "lines_per_step": 5}
    with local_gateway.client() as http:
        sessions = [new_session(http, f"restart {n}") for n in range(5)]
        tasks = [submit(http, session_id, engine="demo", params=params) for session_id in sessions]
    watcher = SessionClient(local_gateway.ws_url, sessions[0])
    await watcher.connect(after=0)
    for session_id in sessions:
        await wait_event(local_gateway, session_id, "step.completed")
    await watcher.read_until(lambda c: bool(c.of_type("step.completed")))
    cursor = watcher.last_seq
    pids = [runner_pid(get_task(local_gateway.client(), task["id"])) for task in tasks]
    forkserver = json.loads((local_gateway.data_dir / "forkserver.json").read_text())["pid"]
    local_gateway.kill()
    await watcher.close()
    await asyncio.sleep(1.5)  # runners keep working and buffering meanwhile
    assert not any(gone(pid) for pid in pids), "runners outlive the gateway"
    assert await wait_gone([forkserver], 5), "the dead gateway's fork server leaves"
    local_gateway.start()
    for task in tasks:
        assert (await wait_phase(local_gateway, task["id"], timeout_s=90))["phase"] == "succeeded"
    for task, session_id in zip(tasks, sessions, strict=True):
        events = all_events(local_gateway, session_id)
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
        mine = [event for event in events if event.get("task_id") == task["id"]]
        steps = [event["data"]["step"] for event in mine if event["type"] == "step.started"]
        assert steps == [1, 2, 3, 4, 5, 6], "every step exactly once, in order"
        assert [event["type"] for event in mine].count("task.succeeded") == 1
        lines = output_text(mine).splitlines()
        expected = [f"[{task['id']}] step {s}/6 line {n}/5" for s in range(1, 7) for n in range(1, 6)]
        assert lines == expected
    replay = SessionClient(local_gateway.ws_url, sessions[0])
    await replay.connect(after=cursor)
    final_seq = all_events(local_gateway, sessions[0])[-1]["seq"]
    await replay.read_until(lambda c: c.last_seq >= final_seq)
    assert replay.events == [e for e in all_events(local_gateway, sessions[0]) if e["seq"] > cursor]
    await replay.close()


async def test_runner_sigkill_fails_the_task_and_state_resumes(local_gateway: GatewayProcess) -> None:
    with local_gateway.client() as http:
        session_id = new_session(http)
        task = submit(http, session_id, engine="demo", params={"steps": 30, "step_delay_s": 0.3})
        await wait_event(local_gateway, session_id, "state.saved", count=2)
        os.kill(runner_pid(get_task(http, task["id"])), signal.SIGKILL)
        killed_at = time.monotonic()
        ended = await wait_phase(local_gateway, task["id"], timeout_s=20)
        assert ended["phase"] == "failed" and time.monotonic() - killed_at < 10
        assert ended["reason"] and "without" in ended["reason"]
        session = http.get(f"/api/sessions/{session_id}").json()
        assert session["has_state"] and session["state_version"] >= 2
        saved = session["state_version"]
        completed = max(
            e["data"]["step"] for e in all_events(local_gateway, session_id) if e["type"] == "step.completed"
        )
        follow_up = submit(
            http, session_id, engine="demo", params={"steps": completed + 1, "step_delay_s": 0}
        )
    assert (await wait_phase(local_gateway, follow_up["id"]))["phase"] == "succeeded"
    mine = [e for e in all_events(local_gateway, session_id) if e.get("task_id") == follow_up["id"]]
    started = next(e for e in mine if e["type"] == "task.started")
    assert started["data"]["resumed_from_version"] >= saved
    assert [e["data"]["step"] for e in mine if e["type"] == "step.started"] == [completed + 1]


async def test_a_runner_sigtermed_from_outside_fails_its_task_with_the_reason(
    local_gateway: GatewayProcess,
) -> None:
    with local_gateway.client() as http:
        session_id = new_session(http)
        task = submit(http, session_id, engine="demo", params={"steps": 100, "step_delay_s": 0.3})
        await wait_event(local_gateway, session_id, "step.started")
        pid = runner_pid(get_task(http, task["id"]))
        os.kill(pid, signal.SIGTERM)  # nobody asked the gateway for a cancel
    ended = await wait_phase(local_gateway, task["id"], timeout_s=30)
    assert ended["phase"] == "failed", ended
    assert ended["reason"] == signal_reason("SIGTERM")
    assert await wait_gone([pid]), "the runner exited"
    finals = {"task.failed", "task.cancelled", "task.succeeded", "task.timed_out"}
    [final] = [e for e in all_events(local_gateway, session_id) if e["type"] in finals]
    assert final["type"] == "task.failed" and final["data"]["signal"] == "SIGTERM"


async def test_cancel_running_and_waiting_tasks(local_gateway: GatewayProcess) -> None:
    with local_gateway.client() as http:
        session_id = new_session(http, parallel_tasks=True)
        running = submit(http, session_id, engine="demo", params={"steps": 100, "step_delay_s": 0.5})
        waiting = submit(http, session_id, engine="demo", params={"steps": 2, "approve_plan": True})
        await wait_event(local_gateway, session_id, "step.started")
        await wait_phase(local_gateway, waiting["id"], {"waiting_approval"})
        pids = [runner_pid(get_task(http, task["id"])) for task in (running, waiting)]
        for task in (running, waiting):
            assert http.post(f"/api/tasks/{task['id']}/cancel").status_code == 200
    for task in (running, waiting):
        assert (await wait_phase(local_gateway, task["id"], timeout_s=30))["phase"] == "cancelled"
    assert await wait_gone(pids), "runner processes are gone"
    finals = [e for e in all_events(local_gateway, session_id) if e["type"] == "task.cancelled"]
    assert len(finals) == 2


async def _approval_run(
    gateway: GatewayProcess, decide: dict[str, Any] | None, timeout_s: float, **task: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    code = APPROVAL_SCRIPT.replace("TIMEOUT", str(timeout_s))
    with gateway.client() as http:
        session_id = new_session(http)
        created = submit(http, session_id, engine="script", params={"code": code}, **task)
        (requested,) = await wait_event(gateway, session_id, "approval.requested")
        if decide is not None:
            approval_id = requested["data"]["approval_id"]
            response = http.post(f"/api/approvals/{approval_id}/resolve", json=decide)
            assert response.status_code == 200, response.text
    ended = await wait_phase(gateway, created["id"], timeout_s=60)
    return ended, all_events(gateway, session_id)


def _outcome(events: list[dict[str, Any]]) -> str:
    return next(line for line in output_text(events).splitlines() if line.startswith("OUTCOME "))


async def test_script_approval_approved_and_rejected(local_gateway: GatewayProcess) -> None:
    ended, events = await _approval_run(local_gateway, {"decision": "approve"}, 60)
    assert ended["phase"] == "succeeded" and '"approved": true' in _outcome(events)
    ended, events = await _approval_run(local_gateway, {"decision": "reject"}, 60)
    assert ended["phase"] == "succeeded" and '"status": "rejected"' in _outcome(events)


async def test_script_approval_timed_out_follows_policy(local_gateway: GatewayProcess) -> None:
    ended, events = await _approval_run(local_gateway, None, 1, on_timeout="approve")
    assert ended["phase"] == "succeeded"
    assert '"status": "expired"' in _outcome(events) and '"approved": true' in _outcome(events)
    assert any(e["type"] == "approval.expired" for e in events)
    ended, events = await _approval_run(local_gateway, None, 1, on_timeout="fail")
    assert ended["phase"] == "failed" and "expired" in ended["reason"]


async def test_bad_input_gets_clear_errors_and_the_gateway_carries_on(local_gateway: GatewayProcess) -> None:
    with local_gateway.client() as http:
        session_id = new_session(http)
        unknown = http.post(f"/api/sessions/{session_id}/tasks", json={"engine": "nope"})
        assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_engine"
        invalid = http.post(
            f"/api/sessions/{session_id}/tasks", json={"engine": "demo", "params": {"steps": -1}}
        )
        assert invalid.status_code == 422 and "steps" in invalid.json()["message"]
        missing = submit(http, session_id, engine="script", params={"path": "missing.py"})
        failing = submit(http, session_id, engine="script", params={"code": "raise SystemExit(3)"})
        flood = submit(
            http,
            session_id,
            engine="script",
            params={"code": "for n in range(300000): print('flood', n)", "max_output_lines_per_s": 2000},
        )
    assert (await wait_phase(local_gateway, missing["id"]))["reason"] == "script not found: missing.py"
    assert (await wait_phase(local_gateway, failing["id"]))["reason"] == "script exited with code 3"
    assert (await wait_phase(local_gateway, flood["id"], timeout_s=120))["phase"] == "succeeded"
    events = all_events(local_gateway, session_id)
    notices = [e for e in events if e["type"] == "output" and "dropped" in e["data"]]
    kept = output_text([e for e in events if e.get("task_id") == flood["id"]]).count("\n")
    assert notices and kept + sum(n["data"]["dropped"] for n in notices) == 300000
    with httpx.Client(base_url=local_gateway.url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get(f"/api/sessions/{session_id}").status_code == 200


async def test_demo_with_plan_approval_end_to_end(local_gateway: GatewayProcess) -> None:
    params = {"steps": 2, "step_delay_s": 0.1, "approve_plan": True}
    with local_gateway.client() as http:
        session_id = new_session(http)
        task = submit(http, session_id, engine="demo", params=params)
        (requested,) = await wait_event(local_gateway, session_id, "approval.requested")
        assert requested["data"]["kind"] == "plan" and len(requested["data"]["context"]["steps"]) == 2
        approval_id = requested["data"]["approval_id"]
        assert (
            http.post(f"/api/approvals/{approval_id}/resolve", json={"decision": "approve"}).status_code
            == 200
        )
    assert (await wait_phase(local_gateway, task["id"]))["phase"] == "succeeded"
    types = [e["type"] for e in all_events(local_gateway, session_id)]
    for expected in ("plan.proposed", "approval.resolved", "agent.message", "code", "output", "state.saved"):
        assert expected in types, expected
    assert types.index("approval.resolved") < types.index("step.started") < types.index("task.succeeded")
