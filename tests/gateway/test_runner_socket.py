"""The runner socket: exactly-once storage, acks, approvals, state, cancel."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.support.gateway import GatewayProcess
from tests.support.runner_client import TestRunner, runner_token


def _submit(client: httpx.Client, **task: Any) -> tuple[str, str]:
    session = client.post("/api/sessions", json={"title": "runner test"}).json()
    body = {"engine": "demo", "mode": "one-shot", "prompt": "hi", **task}
    created = client.post(f"/api/sessions/{session['id']}/tasks", json=body)
    assert created.status_code == 201, created.text
    return session["id"], created.json()["id"]


def _events(client: httpx.Client, session_id: str, after: int = 0) -> list[dict[str, Any]]:
    page = client.get(f"/api/sessions/{session_id}/events", params={"after": after, "limit": 5000})
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


async def test_events_are_stored_once_even_when_resent(gateway: GatewayProcess) -> None:
    with gateway.client() as client:
        session_id, task_id = _submit(client)
    runner = TestRunner(gateway.ws_url, task_id)
    welcome = await runner.connect()
    assert welcome["task"]["engine"] == "demo" and welcome["acked_rseq"] == 0
    await runner.send_event("task.started", {"engine": "demo", "mode": "one-shot"})
    for line in range(20):
        await runner.send_event("output", {"stream": "stdout", "text": f"line {line}"})
    await runner.wait_acked(21)
    # Drop the link and resend the last ten as a runner does after a reconnect.
    await runner.close()
    welcome = await runner.connect()
    assert welcome["acked_rseq"] == 21
    for rseq in range(12, 22):
        await runner.send_event("output", {"stream": "stdout", "text": f"line {rseq - 2}"}, rseq=rseq)
    await runner.send_event("task.succeeded", {"reason": "done"})
    await runner.wait_acked(22)
    await runner.close()
    with gateway.client() as client:
        events = _events(client, session_id)
        task = client.get(f"/api/tasks/{task_id}").json()
    lines = [e["data"]["text"] for e in events if e["type"] == "output"]
    assert lines == [f"line {n}" for n in range(20)]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events if e["type"].startswith("task.")] == [
        "task.queued",
        "task.started",
        "task.succeeded",
    ]
    assert task["phase"] == "succeeded" and task["reason"] == "done"


async def test_approval_round_trip_and_second_decision_refused(gateway: GatewayProcess) -> None:
    with gateway.client() as client:
        _session_id, task_id = _submit(client)
    runner = TestRunner(gateway.ws_url, task_id)
    await runner.connect()
    await runner.send_event("task.started", {"engine": "demo", "mode": "one-shot"})
    rseq, approval_id = await runner.request_approval("Run the plan?", options=["approve", "reject"])
    await runner.wait_acked(rseq)
    with gateway.client() as client:
        assert client.get(f"/api/tasks/{task_id}").json()["phase"] == "waiting_approval"
        pending = client.get("/api/approvals", params={"status": "pending"}).json()["items"]
        assert [a["id"] for a in pending] == [approval_id]
        first = client.post(f"/api/approvals/{approval_id}/resolve", json={"decision": "approve"})
        assert first.status_code == 200 and first.json()["status"] == "approved"
        second = client.post(f"/api/approvals/{approval_id}/resolve", json={"decision": "reject"})
        assert second.status_code == 409
        assert second.json()["code"] == "already_resolved"
        assert "already approved by local" in second.json()["message"]
        assert client.get(f"/api/tasks/{task_id}").json()["phase"] == "running"
    decision = await runner.receive("approval.decision")
    assert decision["approval_id"] == approval_id and decision["status"] == "approved"
    await runner.close()


async def test_approval_expires_and_runner_is_told(gateway_factory: Any) -> None:
    gateway = gateway_factory(CMBTASK_APPROVAL_SWEEP_INTERVAL_S="0.2")
    with gateway.client() as client:
        session_id, task_id = _submit(client)
    runner = TestRunner(gateway.ws_url, task_id)
    await runner.connect()
    _, approval_id = await runner.request_approval("Quick?", timeout_s=0.5, on_timeout="approve")
    decision = await runner.receive("approval.decision", timeout_s=10)
    assert decision["status"] == "expired"
    with gateway.client() as client:
        approval = client.get("/api/approvals").json()["items"][0]
        assert approval["status"] == "expired" and approval["on_timeout"] == "approve"
        expired = [e for e in _events(client, session_id) if e["type"] == "approval.expired"]
        assert expired and expired[0]["data"] == {"approval_id": approval_id, "on_timeout": "approve"}
        late = client.post(f"/api/approvals/{approval_id}/resolve", json={"decision": "approve"})
        assert late.status_code == 409 and "already expired" in late.json()["message"]
    await runner.close()


async def test_state_save_uses_versions(gateway: GatewayProcess) -> None:
    with gateway.client() as client:
        session_id, task_id = _submit(client)
    runner = TestRunner(gateway.ws_url, task_id)
    welcome = await runner.connect()
    assert welcome.get("state") is None and welcome["state_version"] == 0
    first = await runner.save_state({"step": 1}, expected_version=0)
    result = await runner.receive("state.result", rseq=first)
    assert result["ok"] and result["version"] == 1
    stale = await runner.save_state({"step": 2}, expected_version=0)
    refused = await runner.receive("state.result", rseq=stale)
    assert not refused["ok"] and refused["version"] == 1 and "version 1" in refused["message"]
    await runner.close()
    with gateway.client() as client:
        session = client.get(f"/api/sessions/{session_id}").json()
        assert session["has_state"] and session["state_version"] == 1
        _, other_session_task = _submit(client)
        created = client.post(f"/api/sessions/{session_id}/tasks", json={"engine": "demo"}).json()
    # A task in another session starts without that state; the same session's next task gets it.
    other = TestRunner(gateway.ws_url, other_session_task)
    assert (await other.connect()).get("state") is None
    await other.close()
    again = TestRunner(gateway.ws_url, created["id"])
    assert (await again.connect())["state"] == {"step": 1}
    await again.close()


async def test_cancel_reaches_a_connected_runner(gateway: GatewayProcess) -> None:
    with gateway.client() as client:
        _, task_id = _submit(client)
    runner = TestRunner(gateway.ws_url, task_id)
    await runner.connect()
    await runner.send_event("task.started", {"engine": "demo", "mode": "one-shot"})
    await runner.wait_acked(1)
    with gateway.client() as client:
        response = client.post(f"/api/tasks/{task_id}/cancel")
        assert response.status_code == 200
    cancel = await runner.receive("cancel")
    assert cancel["reason"] == "cancelled by local"
    await runner.close()


@pytest.mark.parametrize(
    ("token", "reason"),
    [(None, "missing runner token"), ("rt1.x.1.y", "invalid runner token"), ("garbage", "malformed")],
)
async def test_runner_socket_refuses_bad_tokens(
    gateway: GatewayProcess, token: str | None, reason: str
) -> None:
    with gateway.client() as client:
        _, task_id = _submit(client)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with websockets.connect(f"{gateway.ws_url}/ws/runner/{task_id}", additional_headers=headers) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401 and reason in closed.value.rcvd.reason


async def test_token_for_another_task_is_refused(gateway: GatewayProcess) -> None:
    with gateway.client() as client:
        _, task_a = _submit(client)
        _, task_b = _submit(client)
    headers = {"Authorization": f"Bearer {runner_token(task_a)}"}
    async with websockets.connect(f"{gateway.ws_url}/ws/runner/{task_b}", additional_headers=headers) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_malformed_runner_frames_get_errors_and_store_nothing(gateway: GatewayProcess) -> None:
    with gateway.client() as client:
        session_id, task_id = _submit(client)
    runner = TestRunner(gateway.ws_url, task_id)
    await runner.connect()
    await runner.ws.send("{not json")
    error = await runner.receive("error")
    assert error["code"] == "bad_frame"
    await runner.ws.send(json.dumps({"type": "teleport", "rseq": 1}))
    assert (await runner.receive("error"))["code"] == "bad_frame"
    # An event whose payload breaks its type's schema is kept as an error event.
    await runner.send_event("step.started", {"step": 0, "total": 0})
    await runner.wait_acked(1)
    await runner.send_event("output", {"stream": "stdout", "text": "still fine"})
    await runner.wait_acked(2)
    await runner.close()
    with gateway.client() as client:
        events = _events(client, session_id)
    assert [e["type"] for e in events] == ["task.queued", "error", "output"]
    assert events[1]["data"]["code"] == "invalid_event"
