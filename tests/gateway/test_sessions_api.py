"""REST for sessions and tasks: CRUD, filters, optimistic locking, suspend and
resume, deletion, the event cursor, modes, and input validation.

One gateway serves the whole module (proxy auth mode); every test acts as a
user of its own, so tests never see each other's sessions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.gateway import GatewayProcess
from tests.support.runner_client import TestRunner

GATEWAY_ENV = {"CMBTASK_AUTH_MODE": "proxy"}

DESIGN_MODES = {"one-shot", "planning-control", "copilot", "hitl-interactive", "idea-generation"}


@pytest.fixture
def client(shared_gateway: GatewayProcess) -> Iterator[httpx.Client]:
    user = f"user-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=shared_gateway.url, headers={"X-Forwarded-User": user}, timeout=30) as http:
        yield http


def _create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/sessions", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _submit(client: httpx.Client, session_id: str, **task: Any) -> httpx.Response:
    return client.post(f"/api/sessions/{session_id}/tasks", json={"engine": "demo", **task})


def _rows(database_url: str, table: str, column: str, value: str) -> int:
    """Rows left in the database itself, not what the API chooses to show."""
    url = database_url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg2")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = text(f"SELECT count(*) FROM {table} WHERE {column} = :value")
            return int(connection.execute(query, {"value": value}).scalar_one())
    finally:
        engine.dispose()


def test_create_and_read(client: httpx.Client) -> None:
    created = _create(client, title="Dust maps", mode="one-shot")
    assert created["title"] == "Dust maps" and created["mode"] == "one-shot"
    assert created["status"] == "active" and created["version"] == 1 and created["last_seq"] == 0
    assert created["owner"] == client.headers["X-Forwarded-User"]
    read = client.get(f"/api/sessions/{created['id']}")
    assert read.status_code == 200 and read.json() == created
    missing = client.get(f"/api/sessions/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_create_refuses_bad_bodies(client: httpx.Client) -> None:
    for body in ({"title": ""}, {"title": "x" * 201}, {"colour": "red"}, {"ttl_s": 1}):
        response = client.post("/api/sessions", json=body)
        assert response.status_code == 422, body
        assert response.json()["code"] == "invalid_request"
    assert client.get("/api/sessions").json()["total"] == 0


def test_list_filters_orders_and_pages(client: httpx.Client) -> None:
    titles = ["Alpha spectra", "beta lensing", "ALPHA noise", "gamma 100%", "delta maps"]
    modes = ["one-shot", "copilot", "one-shot", "copilot", "one-shot"]
    made = [_create(client, title=t, mode=m) for t, m in zip(titles, modes, strict=True)]
    client.post(f"/api/sessions/{made[1]['id']}/suspend").raise_for_status()

    everything = client.get("/api/sessions").json()
    assert everything["total"] == 5
    assert [s["id"] for s in everything["items"]] == [s["id"] for s in reversed(made)]  # newest first

    by_mode = client.get("/api/sessions", params={"mode": "copilot"}).json()
    assert by_mode["total"] == 2 and {s["id"] for s in by_mode["items"]} == {made[1]["id"], made[3]["id"]}
    suspended = client.get("/api/sessions", params={"status": "suspended"}).json()
    assert [s["id"] for s in suspended["items"]] == [made[1]["id"]]
    active_copilot = client.get("/api/sessions", params={"status": "active", "mode": "copilot"}).json()
    assert [s["id"] for s in active_copilot["items"]] == [made[3]["id"]]

    alpha = client.get("/api/sessions", params={"q": "alpha"}).json()
    assert {s["title"] for s in alpha["items"]} == {"Alpha spectra", "ALPHA noise"}
    # LIKE wildcards in the query are literal characters.
    assert client.get("/api/sessions", params={"q": "%"}).json()["total"] == 1
    assert client.get("/api/sessions", params={"q": "_"}).json()["total"] == 0

    page = client.get("/api/sessions", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [s["id"] for s in page["items"]] == [made[3]["id"], made[2]["id"]]
    beyond = client.get("/api/sessions", params={"offset": 10}).json()
    assert beyond["items"] == [] and beyond["total"] == 5

    for params in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"status": "sleeping"}):
        response = client.get("/api/sessions", params=params)
        assert response.status_code == 422, params
        assert response.json()["code"] == "invalid_request"


def test_rename_needs_the_current_version(client: httpx.Client) -> None:
    session = _create(client, title="first")
    url = f"/api/sessions/{session['id']}"
    renamed = client.patch(url, json={"version": 1, "title": "second"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "second" and renamed.json()["version"] == 2
    again = client.patch(url, json={"version": 2, "context": {"band": "143GHz"}})
    assert again.json()["version"] == 3 and again.json()["context"] == {"band": "143GHz"}

    stale = client.patch(url, json={"version": 2, "title": "overwritten"})
    assert stale.status_code == 409
    body = stale.json()
    assert body["code"] == "version_conflict" and body["detail"] == {"current_version": 3}
    assert "version 3" in body["message"]
    current = client.get(url).json()
    assert (
        current["title"] == "second" and current["version"] == 3 and current["context"] == {"band": "143GHz"}
    )

    for bad in ({"title": "no version"}, {"version": 0, "title": "x"}, {"version": 3, "owner": "mallory"}):
        response = client.patch(url, json=bad)
        assert response.status_code == 422, bad
    assert client.get(url).json()["version"] == 3


def test_suspend_blocks_submission_until_resume(client: httpx.Client) -> None:
    session = _create(client)
    sid = session["id"]
    suspended = client.post(f"/api/sessions/{sid}/suspend")
    assert suspended.status_code == 200
    assert suspended.json()["status"] == "suspended" and suspended.json()["version"] == 2
    # Suspending twice changes nothing.
    assert client.post(f"/api/sessions/{sid}/suspend").json()["version"] == 2

    refused = _submit(client, sid)
    assert refused.status_code == 409 and refused.json()["code"] == "bad_state"
    assert "resume" in refused.json()["message"]
    assert client.get(f"/api/sessions/{sid}/tasks").json() == []
    assert client.get(f"/api/sessions/{sid}").json()["last_seq"] == 0

    resumed = client.post(f"/api/sessions/{sid}/resume")
    assert resumed.json()["status"] == "active" and resumed.json()["version"] == 3
    assert _submit(client, sid).status_code == 201
    assert len(client.get(f"/api/sessions/{sid}/tasks").json()) == 1


def test_delete_removes_the_session_with_its_tasks_and_events(
    client: httpx.Client, shared_gateway: GatewayProcess
) -> None:
    keep = _create(client, title="keep")
    doomed = _create(client, title="doomed")
    task = _submit(client, doomed["id"]).json()
    kept_task = _submit(client, keep["id"]).json()
    assert _rows(shared_gateway.database_url, "events", "session_id", doomed["id"]) == 1

    deleted = client.delete(f"/api/sessions/{doomed['id']}")
    assert deleted.status_code == 204
    for path in (
        f"/api/sessions/{doomed['id']}",
        f"/api/sessions/{doomed['id']}/events",
        f"/api/sessions/{doomed['id']}/tasks",
        f"/api/tasks/{task['id']}",
    ):
        assert client.get(path).status_code == 404, path
    assert client.delete(f"/api/sessions/{doomed['id']}").status_code == 404
    for table in ("events", "tasks", "approvals"):
        assert _rows(shared_gateway.database_url, table, "session_id", doomed["id"]) == 0, table
    assert _rows(shared_gateway.database_url, "sessions", "id", doomed["id"]) == 0
    # The other session is untouched.
    assert client.get(f"/api/tasks/{kept_task['id']}").status_code == 200
    assert [s["id"] for s in client.get("/api/sessions").json()["items"]] == [keep["id"]]


def test_events_after_a_cursor(client: httpx.Client) -> None:
    sid = _create(client)["id"]
    tasks = [_submit(client, sid, prompt=f"task {n}").json() for n in range(3)]
    client.post(f"/api/tasks/{tasks[0]['id']}/cancel").raise_for_status()
    url = f"/api/sessions/{sid}/events"

    everything = client.get(url).json()
    assert [e["seq"] for e in everything["items"]] == [1, 2, 3, 4]
    assert [e["type"] for e in everything["items"]] == ["task.queued"] * 3 + ["task.cancelled"]
    assert everything["last_seq"] == 4 and everything["has_more"] is False
    first = everything["items"][0]
    assert first["v"] == 1 and first["session_id"] == sid and first["task_id"] == tasks[0]["id"]
    assert first["data"]["prompt"] == "task 0" and first["ts"].endswith("Z")

    rest = client.get(url, params={"after": 2}).json()
    assert [e["seq"] for e in rest["items"]] == [3, 4] and rest["items"] == everything["items"][2:]
    one = client.get(url, params={"after": 1, "limit": 1}).json()
    assert [e["seq"] for e in one["items"]] == [2] and one["has_more"] is True and one["last_seq"] == 2
    tail = client.get(url, params={"after": 4}).json()
    assert tail == {"items": [], "last_seq": 4, "has_more": False}
    for params in ({"after": -1}, {"after": "abc"}, {"limit": 0}, {"limit": 5001}):
        assert client.get(url, params=params).status_code == 422, params


def test_modes_lists_the_design_modes(client: httpx.Client) -> None:
    response = client.get("/api/modes")
    assert response.status_code == 200
    modes = {mode["name"]: mode for mode in response.json()}
    assert set(modes) >= DESIGN_MODES
    for mode in modes.values():
        assert {"demo", "script"} <= set(mode["engines"]), mode["name"]
        assert isinstance(mode["supports_resume"], bool) and isinstance(mode["human_in_the_loop"], bool)
    assert modes["planning-control"]["supports_resume"] and modes["planning-control"]["human_in_the_loop"]
    assert modes["hitl-interactive"]["human_in_the_loop"]
    assert not modes["one-shot"]["supports_resume"] and not modes["one-shot"]["human_in_the_loop"]
    assert modes["ocr"]["utility"] and not modes["one-shot"]["utility"]


def _refusal(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def test_submit_validates_engine_params_and_sizes(client: httpx.Client) -> None:
    sid = _create(client)["id"]

    unknown = _refusal(_submit(client, sid, engine="warp-drive"), 422, "unknown_engine")
    assert (
        "warp-drive" in unknown["message"] and "demo" in unknown["message"] and "script" in unknown["message"]
    )
    _refusal(_submit(client, sid, engine="Not An Engine"), 422, "invalid_request")

    steps = _refusal(_submit(client, sid, params={"steps": 0}), 422, "invalid_params")
    assert "steps" in steps["message"] and steps["detail"][0]["loc"] == ["steps"]
    extra = _refusal(_submit(client, sid, params={"stepz": 3}), 422, "invalid_params")
    assert "stepz" in extra["message"]
    typed = _refusal(_submit(client, sid, params={"approve_plan": "perhaps"}), 422, "invalid_params")
    assert "approve_plan" in typed["message"]
    script = _refusal(_submit(client, sid, engine="script", params={}), 422, "invalid_params")
    assert "exactly one of" in script["message"]

    long_prompt = _refusal(_submit(client, sid, prompt="x" * 100_001), 422, "invalid_request")
    assert "prompt" in long_prompt["message"]
    _refusal(_submit(client, sid, timeout_s=-1), 422, "invalid_request")
    _refusal(_submit(client, sid, mystery=True), 422, "invalid_request")

    too_big = _refusal(_submit(client, sid, prompt="x" * 1_100_000), 413, "too_large")
    assert "1048576" in too_big["message"]

    # Nothing of the above was stored; a valid task still goes through.
    assert client.get(f"/api/sessions/{sid}/tasks").json() == []
    assert client.get(f"/api/sessions/{sid}").json()["last_seq"] == 0
    accepted = _submit(client, sid, params={"steps": 2, "approve_plan": True}, prompt="ok")
    assert accepted.status_code == 201
    assert accepted.json()["params"] == {"steps": 2, "approve_plan": True}


def test_streamed_body_over_the_limit_is_refused(client: httpx.Client) -> None:
    sid = _create(client)["id"]

    def chunks() -> Iterator[bytes]:
        yield b'{"engine": "demo", "prompt": "'
        for _ in range(40):
            yield b"x" * 32_768
        yield b'"}'

    # No Content-Length: the limit must hold while the body is read.
    response = client.post(
        f"/api/sessions/{sid}/tasks", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _refusal(response, 413, "too_large")
    assert client.get(f"/api/sessions/{sid}/tasks").json() == []


def test_read_and_cancel_a_queued_task(client: httpx.Client) -> None:
    sid = _create(client)["id"]
    task = _submit(client, sid, prompt="hello", mode="copilot", timeout_s=60).json()
    assert task["phase"] == "queued" and task["session_id"] == sid and task["mode"] == "copilot"
    read = client.get(f"/api/tasks/{task['id']}")
    assert read.status_code == 200 and read.json()["prompt"] == "hello" and read.json()["timeout_s"] == 60

    cancelled = client.post(f"/api/tasks/{task['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["phase"] == "cancelled" and cancelled.json()["finished_at"] is not None
    assert client.get(f"/api/tasks/{task['id']}").json()["phase"] == "cancelled"
    events = client.get(f"/api/sessions/{sid}/events").json()["items"]
    final = [e for e in events if e["type"] == "task.cancelled"]
    assert len(final) == 1 and final[0]["task_id"] == task["id"]
    assert final[0]["data"]["reason"].startswith("cancelled by ")

    again = _refusal(client.post(f"/api/tasks/{task['id']}/cancel"), 409, "already_finished")
    assert "cancelled" in again["message"]
    assert len(client.get(f"/api/sessions/{sid}/events").json()["items"]) == len(events)
    _refusal(client.get(f"/api/tasks/{uuid.uuid4()}"), 404, "not_found")
    _refusal(client.post(f"/api/tasks/{uuid.uuid4()}/cancel"), 404, "not_found")


def test_malformed_json_bodies_are_refused(client: httpx.Client) -> None:
    sid = _create(client)["id"]
    headers = {"Content-Type": "application/json"}
    for path in ("/api/sessions", f"/api/sessions/{sid}/tasks"):
        response = client.post(path, content=b'{"title": "unterminated', headers=headers)
        body = _refusal(response, 422, "invalid_request")
        assert "JSON" in body["message"]
    _refusal(client.patch(f"/api/sessions/{sid}", content=b"[1, 2", headers=headers), 422, "invalid_request")
    _refusal(client.post("/api/sessions", json=["not", "an", "object"]), 422, "invalid_request")
    assert client.get("/api/sessions").json()["total"] == 1
    assert client.get(f"/api/sessions/{sid}").json()["version"] == 1


async def test_approvals_list_and_resolve(client: httpx.Client, shared_gateway: GatewayProcess) -> None:
    sid = _create(client)["id"]
    other_sid = _create(client)["id"]
    task_id = _submit(client, sid).json()["id"]
    other_task = _submit(client, other_sid).json()["id"]
    # The runners share this event loop: talk to the gateway without blocking it.
    http = httpx.AsyncClient(base_url=shared_gateway.url, headers=client.headers, timeout=30)
    runner, other = TestRunner(shared_gateway.ws_url, task_id), TestRunner(shared_gateway.ws_url, other_task)
    await runner.connect()
    await other.connect()
    _, plain = await runner.request_approval("Run it?", options=["approve", "reject"])
    rseq, free = await runner.request_approval("Anything to add?", options=["answer"], allow_text=True)
    await runner.wait_acked(rseq)
    other_rseq, elsewhere = await other.request_approval("Other session?")
    await other.wait_acked(other_rseq)

    pending = (await http.get("/api/approvals", params={"status": "pending"})).json()["items"]
    assert [a["id"] for a in pending] == [plain, free, elsewhere]
    in_session = (await http.get("/api/approvals", params={"session_id": sid})).json()["items"]
    assert [a["id"] for a in in_session] == [plain, free]
    assert in_session[0]["prompt"] == "Run it?" and in_session[0]["options"] == ["approve", "reject"]
    _refusal(await http.get("/api/approvals", params={"status": "maybe"}), 422, "invalid_request")

    url = f"/api/approvals/{plain}/resolve"
    not_offered = _refusal(
        await http.post(url, json={"decision": "modify", "text": "x"}), 422, "invalid_decision"
    )
    assert "approve, reject" in not_offered["message"]
    _refusal(await http.post(url, json={"decision": "approve", "text": "but"}), 422, "invalid_decision")
    _refusal(await http.post(url, json={"decision": "perhaps"}), 422, "invalid_request")
    _refusal(await http.post(url, json={}), 422, "invalid_request")
    _refusal(
        await http.post(f"/api/approvals/{uuid.uuid4().hex}/resolve", json={"decision": "approve"}),
        404,
        "not_found",
    )
    assert [
        a["id"] for a in (await http.get("/api/approvals", params={"status": "pending"})).json()["items"]
    ] == [
        plain,
        free,
        elsewhere,
    ]

    answered = await http.post(
        f"/api/approvals/{free}/resolve", json={"decision": "answer", "text": "use Planck"}
    )
    assert answered.status_code == 200
    assert answered.json()["status"] == "answered" and answered.json()["response"] == "use Planck"
    decision = await runner.receive("approval.decision", approval_id=free)
    assert decision["status"] == "answered" and decision["text"] == "use Planck"
    rejected = (await http.post(url, json={"decision": "reject"})).json()
    assert rejected["status"] == "rejected" and rejected["resolved_by"] == http.headers["X-Forwarded-User"]
    statuses = {a["id"]: a["status"] for a in (await http.get("/api/approvals")).json()["items"]}
    assert statuses == {plain: "rejected", free: "answered", elsewhere: "pending"}
    assert [
        a["id"] for a in (await http.get("/api/approvals", params={"status": "rejected"})).json()["items"]
    ] == [plain]
    await runner.close()
    await other.close()
    await http.aclose()


def test_task_files_stay_inside_the_work_directory(
    client: httpx.Client, shared_gateway: GatewayProcess
) -> None:
    sid = _create(client)["id"]
    task_id = _submit(client, sid).json()["id"]
    work = shared_gateway.data_dir / "tasks" / task_id
    (work / "plots").mkdir(parents=True)
    (work / "plots" / "cl.txt").write_text("ell,cl\n2,1.0\n")
    secret = shared_gateway.data_dir / f"private-{task_id}.txt"
    secret.write_text("not for tasks")
    (work / "escape").symlink_to(secret)

    served = client.get(f"/api/tasks/{task_id}/files/plots/cl.txt")
    assert served.status_code == 200 and served.text == "ell,cl\n2,1.0\n"
    for path in (
        "..%2F..%2F" + secret.name,
        "%2E%2E/%2E%2E/" + secret.name,
        "escape",
        "plots",
        "nothing.txt",
    ):
        refused = client.get(f"/api/tasks/{task_id}/files/{path}")
        assert refused.status_code == 404, path
        assert "not for tasks" not in refused.text
        assert refused.json()["message"].startswith("file "), refused.text
    with httpx.Client(base_url=shared_gateway.url, headers={"X-Forwarded-User": "someone-else"}) as stranger:
        assert stranger.get(f"/api/tasks/{task_id}/files/plots/cl.txt").status_code == 404
