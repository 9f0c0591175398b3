"""SIGKILL the gateway mid-stream with an approval pending; lose nothing."""

from __future__ import annotations

from typing import Any

from tests.support.clients import SessionClient
from tests.support.gateway import GatewayProcess
from tests.support.runner_client import TestRunner


def _all_events(gateway: GatewayProcess, session_id: str) -> list[dict[str, Any]]:
    with gateway.client() as http:
        page = http.get(f"/api/sessions/{session_id}/events", params={"limit": 5000}).json()
    items: list[dict[str, Any]] = page["items"]
    return items


async def test_kill_and_restart_loses_nothing(gateway: GatewayProcess) -> None:
    with gateway.client() as http:
        session = http.post("/api/sessions", json={"title": "restart"}).json()
        task = http.post(f"/api/sessions/{session['id']}/tasks", json={"engine": "demo"}).json()
    session_id, task_id = session["id"], task["id"]
    watcher = SessionClient(gateway.ws_url, session_id)
    await watcher.connect(after=0)
    runner = TestRunner(gateway.ws_url, task_id)
    await runner.connect()
    await runner.send_event("task.started", {"engine": "demo", "mode": "one-shot"})
    for line in range(100):
        await runner.send_event("output", {"stream": "stdout", "text": f"before {line}"})
    approval_rseq, approval_id = await runner.request_approval("Continue after the crash?")
    await runner.wait_acked(approval_rseq)
    await watcher.read_until(lambda c: bool(c.of_type("approval.requested")))
    # Events keep flowing while the gateway dies: some are stored, some not.
    for line in range(200):
        await runner.send_event("output", {"stream": "stdout", "text": f"during {line}"})
    gateway.kill()
    await runner.close()
    seen_before_crash = watcher.last_seq
    await watcher.close()

    gateway.start()
    with gateway.client() as http:
        assert http.get(f"/api/sessions/{session_id}").status_code == 200
        assert http.get(f"/api/tasks/{task_id}").json()["phase"] == "waiting_approval"
        pending = http.get("/api/approvals", params={"status": "pending"}).json()["items"]
        assert [a["id"] for a in pending] == [approval_id]
        # Decided while the runner is away: it must learn on reconnect.
        resolved = http.post(f"/api/approvals/{approval_id}/resolve", json={"decision": "approve"})
        assert resolved.status_code == 200

    welcome = await runner.connect(pending_approvals=[approval_id])
    decision = await runner.receive("approval.decision")
    assert decision["approval_id"] == approval_id and decision["status"] == "approved"
    assert approval_rseq <= welcome["acked_rseq"] <= runner.rseq
    resent = await runner.resend_unacked()
    assert resent == runner.rseq - welcome["acked_rseq"]
    done = await runner.send_event("task.succeeded", {"reason": "finished after restart"})
    await runner.wait_acked(done, timeout_s=30)
    await runner.close()

    events = _all_events(gateway, session_id)
    texts = [e["data"]["text"] for e in events if e["type"] == "output"]
    assert texts == [f"before {n}" for n in range(100)] + [f"during {n}" for n in range(200)]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len(events) == len({(e["task_id"], e["seq"]) for e in events})

    watcher = SessionClient(gateway.ws_url, session_id)
    await watcher.connect(after=seen_before_crash)
    await watcher.read_until(lambda c: c.last_seq >= events[-1]["seq"])
    assert watcher.events == [e for e in events if e["seq"] > seen_before_crash]
    await watcher.close()


def test_restart_keeps_sessions_and_tokens(gateway_factory: Any) -> None:
    gateway = gateway_factory(CMBTASK_AUTH_MODE="token")
    token = gateway.create_token("ada")
    with gateway.client(token) as http:
        created = http.post("/api/sessions", json={"title": "survives"}).json()
    gateway.restart()
    with gateway.client(token) as http:
        again = http.get(f"/api/sessions/{created['id']}")
        assert again.status_code == 200 and again.json()["title"] == "survives"
