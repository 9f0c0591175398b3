"""Per-user limits: sockets (4429), active sessions, task submissions per
minute and unfinished tasks (429 with ``Retry-After`` and the limit's name).
Each test drives one limit to its edge and shows another user unaffected;
requests racing at the edge, also through two replicas, never overshoot.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets

from tests.support.gateway import GatewayProcess

LIMITS = {
    "CMBTASK_MAX_SOCKETS_PER_USER": "2",
    "CMBTASK_MAX_ACTIVE_SESSIONS_PER_USER": "3",
    "CMBTASK_MAX_TASK_SUBMISSIONS_PER_MINUTE": "4",
    "CMBTASK_MAX_CONCURRENT_TASKS_PER_USER": "2",
}
GATEWAY_ENV = {"CMBTASK_AUTH_MODE": "proxy", **LIMITS}


def fresh_user(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def as_user(gateway: GatewayProcess, user: str) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"X-Forwarded-User": user}, timeout=30)


def assert_limited(answer: httpx.Response, limit: str, maximum: int) -> int:
    """A 429 naming ``limit``; returns its Retry-After."""
    assert answer.status_code == 429, answer.text
    body = answer.json()
    assert body["code"] == "limit_exceeded"
    assert body["detail"]["limit"] == limit and body["detail"]["max"] == maximum
    retry_after = int(answer.headers["retry-after"])
    assert retry_after >= 1 and body["detail"]["retry_after_s"] == retry_after
    return retry_after


def new_session(http: httpx.Client) -> str:
    created = http.post("/api/sessions", json={"title": "limited"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def submit(http: httpx.Client, session_id: str) -> httpx.Response:
    return http.post(f"/api/sessions/{session_id}/tasks", json={"engine": "demo"})


async def open_socket(gateway: GatewayProcess, user: str, session_id: str) -> Any:
    url = f"{gateway.ws_url}/ws/sessions/{session_id}"
    return await websockets.connect(url, additional_headers={"X-Forwarded-User": user}, open_timeout=15)


async def first_frame(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 15))
    return frame


async def test_sockets_per_user(shared_gateway: GatewayProcess) -> None:
    user, other = fresh_user("ann"), fresh_user("ben")
    with as_user(shared_gateway, user) as http, as_user(shared_gateway, other) as other_http:
        session, other_session = new_session(http), new_session(other_http)
    sockets = [await open_socket(shared_gateway, user, session) for _ in range(2)]
    for ws in sockets:
        assert (await first_frame(ws))["type"] == "ws.hello"

    over = await open_socket(shared_gateway, user, session)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await first_frame(over)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
    assert "too many sockets: at most 2 per user" in closed.value.rcvd.reason
    # Someone else is not counted against it.
    bystander = await open_socket(shared_gateway, other, other_session)
    assert (await first_frame(bystander))["type"] == "ws.hello"

    # A closed socket frees its place (once the gateway has seen it go).
    await sockets.pop().close()
    for _ in range(100):
        again = await open_socket(shared_gateway, user, session)
        try:
            if (await first_frame(again))["type"] == "ws.hello":
                sockets.append(again)
                break
        except websockets.ConnectionClosed:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("the closed socket's place was never freed")
    for ws in [*sockets, bystander]:
        await ws.close()


def test_active_sessions_per_user(shared_gateway: GatewayProcess) -> None:
    user, other = fresh_user("cat"), fresh_user("dan")
    with as_user(shared_gateway, user) as http, as_user(shared_gateway, other) as other_http:
        sessions = [new_session(http) for _ in range(3)]
        refused = http.post("/api/sessions", json={"title": "one too many"})
        assert_limited(refused, "active_sessions", 3)
        assert "suspend or delete one" in refused.json()["message"]
        assert http.get("/api/sessions").json()["total"] == 3
        new_session(other_http)

        # Suspended sessions do not count; resuming one is a new active one.
        assert http.post(f"/api/sessions/{sessions[0]}/suspend").status_code == 200
        sessions.append(new_session(http))
        assert_limited(http.post(f"/api/sessions/{sessions[0]}/resume"), "active_sessions", 3)
        assert http.get(f"/api/sessions/{sessions[0]}").json()["status"] == "suspended"
        assert http.delete(f"/api/sessions/{sessions[1]}").status_code == 204
        assert http.post(f"/api/sessions/{sessions[0]}/resume").json()["status"] == "active"


def test_concurrent_tasks_per_user(shared_gateway: GatewayProcess) -> None:
    user, other = fresh_user("eve"), fresh_user("fay")
    with as_user(shared_gateway, user) as http, as_user(shared_gateway, other) as other_http:
        session = new_session(http)
        tasks = [submit(http, session).json()["id"] for _ in range(2)]
        refused = submit(http, session)
        assert_limited(refused, "concurrent_tasks", 2)
        assert len(http.get(f"/api/sessions/{session}/tasks").json()) == 2
        assert submit(other_http, new_session(other_http)).status_code == 201
        # A finished task frees its place.
        assert http.post(f"/api/tasks/{tasks[0]}/cancel").json()["phase"] == "cancelled"
        assert submit(http, session).status_code == 201


async def test_task_submissions_per_minute(shared_gateway: GatewayProcess) -> None:
    user, other = fresh_user("gus"), fresh_user("hal")
    with as_user(shared_gateway, user) as http, as_user(shared_gateway, other) as other_http:
        session = new_session(http)
        for _ in range(4):  # cancelled at once: only the rate is in play
            task = submit(http, session)
            assert task.status_code == 201, task.text
            http.post(f"/api/tasks/{task.json()['id']}/cancel")
        retry_after = assert_limited(submit(http, session), "task_submissions_per_minute", 4)
        assert retry_after <= 60
        assert submit(other_http, new_session(other_http)).status_code == 201

    # The socket's submit command meets the same limit as an error frame.
    ws = await open_socket(shared_gateway, user, session)
    command = {"type": "submit_task", "id": "s1", "task": {"engine": "demo"}}
    await ws.send(json.dumps(command))
    async with asyncio.timeout(15):
        while (frame := json.loads(await ws.recv()))["type"] != "ws.error":
            pass
    assert frame["id"] == "s1" and frame["code"] == "limit_exceeded"
    assert "4 tasks in the last minute" in frame["message"]
    await ws.close()


async def _race(
    requests: list[Callable[[httpx.AsyncClient], Any]], clients: list[httpx.AsyncClient]
) -> list[int]:
    answers = await asyncio.gather(
        *(request(clients[n % len(clients)]) for n, request in enumerate(requests))
    )
    return sorted(answer.status_code for answer in answers)


async def test_racing_requests_never_overshoot(shared_gateway: GatewayProcess) -> None:
    await _race_on([shared_gateway], fresh_user("ivy"))


@pytest.fixture
def replicas(database_url: str, gateway_factory: Callable[..., GatewayProcess]) -> list[GatewayProcess]:
    if database_url.startswith("sqlite"):
        pytest.skip("replicas share a PostgreSQL database; SQLite is the single-process default")
    return [gateway_factory(**GATEWAY_ENV), gateway_factory(**GATEWAY_ENV)]


async def test_racing_requests_through_two_replicas_never_overshoot(replicas: list[GatewayProcess]) -> None:
    await _race_on(replicas, "jon")


async def _race_on(gateways: list[GatewayProcess], user: str) -> None:
    headers = {"X-Forwarded-User": user}
    clients = [httpx.AsyncClient(base_url=g.url, headers=headers, timeout=60) for g in gateways]
    try:
        create = [lambda c: c.post("/api/sessions", json={})] * 10
        assert await _race(create, clients) == [201] * 3 + [429] * 7
        listed = (await clients[0].get("/api/sessions")).json()
        assert listed["total"] == 3
        session = listed["items"][0]["id"]
        tasks = [lambda c: c.post(f"/api/sessions/{session}/tasks", json={"engine": "demo"})] * 8
        assert await _race(tasks, clients) == [201] * 2 + [429] * 6
        assert len((await clients[-1].get(f"/api/sessions/{session}/tasks")).json()) == 2
    finally:
        for client in clients:
            await client.aclose()
