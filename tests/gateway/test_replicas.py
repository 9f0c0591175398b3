"""Two gateway replicas on one PostgreSQL database: a client on one sees,
live, what a runner stores through the other."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.clients import SessionClient
from tests.support.gateway import GatewayProcess
from tests.support.runner_client import TestRunner


async def test_events_stored_on_one_replica_reach_clients_of_the_other(
    database_url: str, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("replicas share a PostgreSQL database; SQLite is the single-process default")
    first = gateway_factory()
    second = gateway_factory()
    with first.client() as http:
        session = http.post("/api/sessions", json={"title": "two replicas"}).json()
        task = http.post(f"/api/sessions/{session['id']}/tasks", json={"engine": "demo"}).json()
    watcher = SessionClient(second.ws_url, session["id"])
    await watcher.connect(after=0)
    await watcher.read_until(lambda c: any(f["type"] == "ws.replayed" for f in c.control))
    runner = TestRunner(first.ws_url, task["id"])
    await runner.connect()
    for line in range(50):
        await runner.send_event("output", {"stream": "stdout", "text": f"line {line}"})
    await runner.wait_acked(50)
    # No reconnect: the events arrive on the open socket of the other replica.
    await watcher.read_until(lambda c: len(c.of_type("output")) >= 50, timeout_s=20)
    assert [e["data"]["text"] for e in watcher.of_type("output")] == [f"line {n}" for n in range(50)]
    assert [e["seq"] for e in watcher.events] == list(range(1, len(watcher.events) + 1))
    await runner.close()
    await watcher.close()
