"""Operating the gateway: health and readiness probes, Prometheus metrics that
follow what happens, the OpenAPI docs, structured JSON logs, and no ``print``
anywhere in library code.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
import websockets
from sqlalchemy.engine import make_url

from tests.support.databases import BACKENDS
from tests.support.gateway import GatewayProcess
from tests.support.runner_client import TestRunner

ROOT = Path(__file__).resolve().parents[2]
LIBRARY_PACKAGES = ["protocol", "gateway", "runner", "operator", "migrations"]


def _metrics(gateway: GatewayProcess) -> dict[str, float]:
    """``name{labels}`` -> value, from the Prometheus text format."""
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def _eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def test_health_readiness_and_docs(shared_gateway: GatewayProcess) -> None:
    with shared_gateway.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        spec = client.get("/openapi.json").json()
        for path in [
            "/api/sessions",
            "/api/sessions/{session_id}",
            "/api/sessions/{session_id}/events",
            "/api/sessions/{session_id}/suspend",
            "/api/sessions/{session_id}/resume",
            "/api/sessions/{session_id}/tasks",
            "/api/tasks/{task_id}",
            "/api/tasks/{task_id}/cancel",
            "/api/approvals",
            "/api/approvals/{approval_id}/resolve",
            "/api/modes",
            "/api/me",
            "/healthz",
            "/readyz",
            "/metrics",
        ]:
            assert path in spec["paths"], path
        assert set(spec["paths"]["/api/sessions/{session_id}"]) >= {"get", "patch", "delete"}


async def test_metrics_follow_what_happens(shared_gateway: GatewayProcess) -> None:
    gateway = shared_gateway
    before = _metrics(gateway)
    for name in [
        'cmbtask_ws_connections{kind="client"}',
        'cmbtask_ws_connections{kind="runner"}',
        "cmbtask_events_stored_total",
        "cmbtask_events_delivered_total",
        "cmbtask_approvals_pending",
        'cmbtask_tasks{phase="queued"}',
        'cmbtask_tasks{phase="running"}',
    ]:
        assert name in before, name

    def delta(name: str) -> float:
        return _metrics(gateway)[name] - before[name]

    with gateway.client() as client:
        sid = client.post("/api/sessions", json={}).json()["id"]
        first = client.post(f"/api/sessions/{sid}/tasks", json={"engine": "demo"}).json()["id"]
        client.post(f"/api/sessions/{sid}/tasks", json={"engine": "demo"}).raise_for_status()
    assert delta('cmbtask_tasks{phase="queued"}') == 2
    assert delta("cmbtask_events_stored_total") == 2

    async with websockets.connect(f"{gateway.ws_url}/ws/sessions/{sid}") as ws:
        for _ in range(4):  # hello, two events, replayed
            await asyncio.wait_for(ws.recv(), 10)
        assert delta('cmbtask_ws_connections{kind="client"}') == 1
        assert delta("cmbtask_events_delivered_total") == 2

        runner = TestRunner(gateway.ws_url, first)
        await runner.connect()
        await runner.send_event("task.started", {"engine": "demo", "mode": "one-shot"})
        rseq, approval_id = await runner.request_approval("Proceed?")
        await runner.wait_acked(rseq)
        assert delta('cmbtask_ws_connections{kind="runner"}') == 1
        assert delta('cmbtask_tasks{phase="queued"}') == 1
        assert delta('cmbtask_tasks{phase="waiting_approval"}') == 1
        assert delta("cmbtask_approvals_pending") == 1
        assert delta("cmbtask_events_stored_total") == 4

        with gateway.client() as client:
            client.post(
                f"/api/approvals/{approval_id}/resolve", json={"decision": "approve"}
            ).raise_for_status()
        assert delta("cmbtask_approvals_pending") == 0
        assert delta('cmbtask_tasks{phase="running"}') == 1
        await runner.send_event("task.succeeded", {"reason": "done"})
        await runner.wait_acked(rseq + 1)
        assert delta('cmbtask_tasks{phase="succeeded"}') == 1
        await runner.close()
        await _eventually(lambda: delta("cmbtask_events_delivered_total") == 6)
    await _eventually(lambda: delta('cmbtask_ws_connections{kind="client"}') == 0)
    await _eventually(lambda: delta('cmbtask_ws_connections{kind="runner"}') == 0)


def _complete_lines(path: Path) -> list[str]:
    """Lines of a log another process is writing, without a half-written last one."""
    text = path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


def test_logs_are_json_with_request_ids(shared_gateway: GatewayProcess) -> None:
    request_id = uuid.uuid4().hex[:16]
    with shared_gateway.client() as client:
        answered = client.get("/api/sessions", headers={"X-Request-ID": request_id})
        assert answered.headers["x-request-id"] == request_id
        generated = client.get("/api/modes").headers["x-request-id"]
        assert generated and generated != request_id
        client.get("/api/sessions/does-not-exist")
    deadline = time.monotonic() + 5
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = _complete_lines(shared_gateway.log_path)
        records = [json.loads(line) for line in lines if line.startswith("{")]
        # ``cmbtask up`` greets people on stdout (wrapped); everything else is a log record.
        banner = [line for line in lines if not line.startswith("{")]
        assert len(banner) <= 4 and "cmbtask is up at" in " ".join(banner), banner
        if any(r.get("request_id") == generated for r in records):
            break
        time.sleep(0.1)
    assert records and all({"event", "level", "timestamp"} <= set(r) for r in records)
    requests = [r for r in records if r["event"] == "http.request"]
    assert requests and all(r.get("request_id") for r in requests)
    mine = [r for r in requests if r["request_id"] == request_id]
    assert len(mine) == 1
    assert mine[0]["method"] == "GET" and mine[0]["path"] == "/api/sessions" and mine[0]["status"] == 200
    assert isinstance(mine[0]["duration_ms"], float)
    assert mine[0]["user"]  # left by the route for the log, which runs around it
    missing = [r for r in requests if r["path"] == "/api/sessions/does-not-exist"]
    assert missing and missing[-1]["status"] == 404
    assert any(r["event"] == "gateway.started" for r in records)


async def test_runner_logs_carry_task_and_session_ids(shared_gateway: GatewayProcess) -> None:
    with shared_gateway.client() as client:
        sid = client.post("/api/sessions", json={}).json()["id"]
        task_id = client.post(f"/api/sessions/{sid}/tasks", json={"engine": "demo"}).json()["id"]
    runner = TestRunner(shared_gateway.ws_url, task_id)
    await runner.connect()
    await runner.close()
    deadline = time.monotonic() + 5
    connected: list[dict[str, Any]] = []
    while not connected and time.monotonic() < deadline:
        for line in _complete_lines(shared_gateway.log_path):
            if task_id in line:
                record = json.loads(line)
                if record["event"] == "runner.connected":
                    connected.append(record)
        await asyncio.sleep(0.1)
    assert connected and connected[0]["task_id"] == task_id and connected[0]["session_id"] == sid


#: Engines play the user's task, whose own output the runner captures: a
#: print there is the thing being captured, and carries ruff's T201 exemption.
TASK_CODE = "runner/cmbtask_runner/engines/"


def _print_calls(path: Path) -> list[int]:
    source = path.read_text()
    lines = source.splitlines()
    calls = [
        node.lineno
        for node in ast.walk(ast.parse(source, filename=str(path)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    relative = str(path.relative_to(ROOT))
    return [n for n in calls if not (relative.startswith(TASK_CODE) and "noqa: T201" in lines[n - 1])]


def test_no_print_in_library_code() -> None:
    files = [path for package in LIBRARY_PACKAGES for path in (ROOT / package).rglob("*.py")]
    assert len(files) > 30
    offenders = {str(path.relative_to(ROOT)): lines for path in files if (lines := _print_calls(path))}
    assert offenders == {}


PG_ONLY = [backend for backend in BACKENDS if backend == "postgresql"]


@pytest.fixture(params=PG_ONLY)
def droppable_database(request: pytest.FixtureRequest) -> Iterator[tuple[str, Callable[[str], None]]]:
    """A PostgreSQL database of its own, and a way to run admin SQL on it."""
    base = make_url(os.environ["CMBTASK_TEST_PG_URL"])
    name = f"cmbtask_ready_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(
        host=base.host, port=base.port, user=base.username, password=base.password, dbname=base.database
    )
    admin.autocommit = True

    def sql(statement: str) -> None:
        with admin.cursor() as cursor:
            cursor.execute(statement.format(name=name))

    sql('CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False), sql
    finally:
        sql('DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_readyz_fails_while_the_database_is_gone(
    droppable_database: tuple[str, Callable[[str], None]], tmp_path: Path
) -> None:
    url, sql = droppable_database
    gateway = GatewayProcess(tmp_path / "data", url).start()
    try:
        assert httpx.get(f"{gateway.url}/readyz").status_code == 200
        # Dropping the database also ends every connection the gateway holds.
        sql('DROP DATABASE "{name}" WITH (FORCE)')
        gone = httpx.get(f"{gateway.url}/readyz", timeout=30)
        assert gone.status_code == 503
        assert gone.json()["status"] == "unavailable" and gone.json()["database"]
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200  # alive, just not ready
        sql('CREATE DATABASE "{name}"')
        # Ready again once the database answers and the replica's LISTEN
        # connection is back, which retries within a couple of seconds.
        deadline = time.monotonic() + 15
        while (again := httpx.get(f"{gateway.url}/readyz", timeout=30)).status_code != 200:
            assert time.monotonic() < deadline, again.text
            time.sleep(0.1)
    finally:
        gateway.stop()
