"""Who may do what: bearer tokens (``cmbtask token create``), the trusted
proxy header, and per-user isolation of sessions, tasks, approvals and events
on REST and on the client socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from websockets.frames import Close

from tests.support.gateway import GatewayProcess
from tests.support.runner_client import TestRunner

GATEWAY_ENV = {"CMBTASK_AUTH_MODE": "token"}


@dataclass
class Users:
    gateway: GatewayProcess
    alice: str
    bob: str

    def client(self, token: str | None) -> httpx.Client:
        return self.gateway.client(token)


@pytest.fixture(scope="module")
def users(shared_gateway: GatewayProcess) -> Users:
    return Users(shared_gateway, shared_gateway.create_token("alice"), shared_gateway.create_token("bob"))


@dataclass
class AliceWork:
    session_id: str
    task_id: str
    approval_id: str
    runner: TestRunner


@pytest.fixture
async def alice_work(users: Users) -> Any:
    """A session of Alice's with a running task waiting on an approval."""
    with users.client(users.alice) as alice:
        session_id = alice.post("/api/sessions", json={"title": "alice's"}).json()["id"]
        task = alice.post(f"/api/sessions/{session_id}/tasks", json={"engine": "demo"})
        assert task.status_code == 201
    runner = TestRunner(users.gateway.ws_url, task.json()["id"])
    await runner.connect()
    await runner.send_event("task.started", {"engine": "demo", "mode": "one-shot"})
    rseq, approval_id = await runner.request_approval("Go on?", options=["approve", "reject"])
    await runner.wait_acked(rseq)
    yield AliceWork(session_id, task.json()["id"], approval_id, runner)
    await runner.close()


async def _close_of(url: str, headers: dict[str, str] | None = None) -> Close:
    async with websockets.connect(url, additional_headers=headers or {}, open_timeout=10) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(100):
                await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd


def test_token_cli_prints_a_bearer_token(users: Users) -> None:
    assert users.alice.startswith("cmbt_") and len(users.alice) > 30
    assert users.alice != users.bob
    with users.client(users.alice) as alice, users.client(users.bob) as bob:
        assert alice.get("/api/me").json() == {"user": "alice", "auth_mode": "token"}
        assert bob.get("/api/me").json() == {"user": "bob", "auth_mode": "token"}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Bearer"}, "missing_token"),
        ({"Authorization": "Bearer cmbt_not-a-real-token"}, "invalid_token"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "missing_token"),
    ],
)
def test_rest_refuses_missing_and_wrong_tokens(users: Users, headers: dict[str, str], code: str) -> None:
    with httpx.Client(base_url=users.gateway.url, headers=headers) as anonymous:
        for method, path in [
            ("GET", "/api/sessions"),
            ("POST", "/api/sessions"),
            ("GET", "/api/me"),
            ("GET", "/api/modes"),
            ("GET", "/api/approvals"),
        ]:
            response = anonymous.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 401, (method, path)
            assert response.json()["code"] == code
        # Probes stay open: orchestrators carry no user token.
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200


def test_a_token_in_the_query_also_works_for_rest(users: Users) -> None:
    with httpx.Client(base_url=users.gateway.url) as anonymous:
        assert anonymous.get("/api/me", params={"token": users.bob}).json()["user"] == "bob"


async def test_users_see_and_touch_only_their_own(users: Users, alice_work: AliceWork) -> None:
    sid, tid, aid = alice_work.session_id, alice_work.task_id, alice_work.approval_id
    with users.client(users.bob) as bob:
        bob_session = bob.post("/api/sessions", json={"title": "bob's"}).json()["id"]
        attempts: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", f"/api/sessions/{sid}", None),
            ("PATCH", f"/api/sessions/{sid}", {"version": 1, "title": "mine now"}),
            ("DELETE", f"/api/sessions/{sid}", None),
            ("POST", f"/api/sessions/{sid}/suspend", None),
            ("POST", f"/api/sessions/{sid}/resume", None),
            ("GET", f"/api/sessions/{sid}/events", None),
            ("GET", f"/api/sessions/{sid}/tasks", None),
            ("POST", f"/api/sessions/{sid}/tasks", {"engine": "demo"}),
            ("GET", f"/api/tasks/{tid}", None),
            ("POST", f"/api/tasks/{tid}/cancel", None),
            ("GET", f"/api/tasks/{tid}/files/report.txt", None),
            ("POST", f"/api/approvals/{aid}/resolve", {"decision": "approve"}),
        ]
        for method, path, body in attempts:
            response = bob.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["code"] == "not_found"
            assert "alice" not in response.text
        assert [s["id"] for s in bob.get("/api/sessions").json()["items"]] == [bob_session]
        assert bob.get("/api/approvals").json()["items"] == []
        assert bob.get("/api/approvals", params={"session_id": sid}).json()["items"] == []

    with users.client(users.alice) as alice:
        session = alice.get(f"/api/sessions/{sid}").json()
        assert session["title"] == "alice's" and session["version"] == 1 and session["status"] == "active"
        assert alice.get(f"/api/tasks/{tid}").json()["phase"] == "waiting_approval"
        pending = alice.get("/api/approvals", params={"status": "pending"}).json()["items"]
        assert [a["id"] for a in pending] == [aid]
        assert [s["id"] for s in alice.get("/api/sessions").json()["items"]] == [sid]
        events = alice.get(f"/api/sessions/{sid}/events").json()["items"]
        assert [e["type"] for e in events] == ["task.queued", "task.started", "approval.requested"]
        # Alice can still do what Bob could not.
        resolved = alice.post(f"/api/approvals/{aid}/resolve", json={"decision": "approve"})
        assert resolved.status_code == 200 and resolved.json()["resolved_by"] == "alice"
    decision = await alice_work.runner.receive("approval.decision")
    assert decision["status"] == "approved" and decision["resolved_by"] == "alice"


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [
        (lambda users: ("", {}), "missing bearer token"),
        (lambda users: ("?token=cmbt_wrong", {}), "invalid token"),
        (lambda users: ("", {"Authorization": "Bearer cmbt_wrong"}), "invalid token"),
    ],
)
async def test_client_socket_refuses_bad_tokens_with_4401(
    users: Users, alice_work: AliceWork, credentials: Callable[[Users], Any], reason: str
) -> None:
    query, headers = credentials(users)
    close = await _close_of(f"{users.gateway.ws_url}/ws/sessions/{alice_work.session_id}{query}", headers)
    assert close.code == 4401 and reason in close.reason


async def test_client_socket_hides_other_users_sessions(users: Users, alice_work: AliceWork) -> None:
    url = f"{users.gateway.ws_url}/ws/sessions/{alice_work.session_id}"
    close = await _close_of(f"{url}?token={users.bob}")
    assert close.code == 4404 and "not found" in close.reason
    close = await _close_of(url, {"Authorization": f"Bearer {users.bob}"})
    assert close.code == 4404

    # Alice gets in with the query token (browsers) and with the header.
    for query, headers in [(f"?token={users.alice}", {}), ("", {"Authorization": f"Bearer {users.alice}"})]:
        async with websockets.connect(url + query, additional_headers=headers) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert hello["type"] == "ws.hello" and hello["last_seq"] == 3


async def test_socket_commands_cannot_reach_other_users_work(users: Users, alice_work: AliceWork) -> None:
    with users.client(users.bob) as bob:
        bob_session = bob.post("/api/sessions", json={}).json()["id"]
    url = f"{users.gateway.ws_url}/ws/sessions/{bob_session}?token={users.bob}"
    async with websockets.connect(url) as ws:
        commands = [
            {"type": "cancel_task", "id": "c", "task_id": alice_work.task_id},
            {
                "type": "resolve_approval",
                "id": "r",
                "approval_id": alice_work.approval_id,
                "decision": "approve",
            },
        ]
        for command in commands:
            await ws.send(json.dumps(command))
        answers = {}
        for _ in range(20):
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["type"] == "ws.error":
                answers[frame["id"]] = frame["code"]
            if len(answers) == 2:
                break
    assert answers == {"c": "not_found", "r": "not_found"}
    with users.client(users.alice) as alice:
        assert alice.get(f"/api/tasks/{alice_work.task_id}").json()["phase"] == "waiting_approval"
        approvals = alice.get("/api/approvals", params={"status": "pending"}).json()["items"]
        assert alice_work.approval_id in [a["id"] for a in approvals]


@pytest.fixture
def proxy_gateway(gateway_factory: Callable[..., GatewayProcess]) -> Iterator[GatewayProcess]:
    yield gateway_factory(CMBTASK_AUTH_MODE="proxy")


async def test_proxy_mode_trusts_the_forwarded_user(proxy_gateway: GatewayProcess) -> None:
    def as_user(name: str | None) -> httpx.Client:
        headers = {"X-Forwarded-User": name} if name else {}
        return httpx.Client(base_url=proxy_gateway.url, headers=headers)

    with as_user(None) as nobody:
        refused = nobody.get("/api/sessions")
        assert refused.status_code == 401 and "X-Forwarded-User" in refused.json()["message"]
        # A bearer token means nothing in proxy mode.
        assert nobody.get("/api/me", headers={"Authorization": "Bearer x"}).status_code == 401
    with as_user("carol") as carol, as_user("dave") as dave:
        assert carol.get("/api/me").json() == {"user": "carol", "auth_mode": "proxy"}
        session = carol.post("/api/sessions", json={"title": "carol's"}).json()
        assert session["owner"] == "carol"
        assert dave.get(f"/api/sessions/{session['id']}").status_code == 404
        assert dave.get("/api/sessions").json()["total"] == 0

    url = f"{proxy_gateway.ws_url}/ws/sessions/{session['id']}"
    async with websockets.connect(url, additional_headers={"X-Forwarded-User": "carol"}) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ws.hello"
    close = await _close_of(url, {"X-Forwarded-User": "dave"})
    assert close.code == 4404
    close = await _close_of(url)
    assert close.code == 4401 and "X-Forwarded-User" in close.reason
