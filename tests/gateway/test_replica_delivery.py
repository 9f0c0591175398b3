"""Every event exactly once, in order, on one open connection, with two
replicas writing to one session at the same time.

Writers on both replicas (a runner on each, and task submissions through the
REST API of each) make one replica's hub hear of some seqs through its own
stores and of others through the other replica's poke, in whatever order the
network delivers them. A client on each replica must still see 1, 2, 3, …
with nothing repeated and nothing missing, without reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.clients import SessionClient
from tests.support.gateway import GatewayProcess
from tests.support.runner_client import TestRunner

ROUNDS = 30
BURST = 10
RUNNERS_PER_REPLICA = 3


async def _runner_rounds(runner: TestRunner, rounds: int) -> None:
    for round_ in range(rounds):
        for line in range(BURST):
            await runner.send_event("output", {"stream": "stdout", "text": f"{round_}.{line}"})
        await runner.wait_acked(runner.rseq, timeout_s=30)


async def _submit_rounds(http: httpx.AsyncClient, session_id: str, rounds: int) -> None:
    for _ in range(rounds):
        response = await http.post(f"/api/sessions/{session_id}/tasks", json={"engine": "demo"})
        assert response.status_code == 201, response.text


def _parallel(http: httpx.Client, title: str) -> dict[str, Any]:
    session: dict[str, Any] = http.post("/api/sessions", json={"title": title, "parallel_tasks": True}).json()
    return session


async def test_two_replicas_deliver_each_event_once_in_order(
    database_url: str, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("replicas share a PostgreSQL database; SQLite is the single-process default")
    # The writers submit more tasks than one user may have unfinished; the
    # per-user limits have tests of their own (test_limits.py).
    unlimited = {"CMBTASK_MAX_CONCURRENT_TASKS_PER_USER": "0", "CMBTASK_MAX_TASK_SUBMISSIONS_PER_MINUTE": "0"}
    replicas = [gateway_factory(**unlimited), gateway_factory(**unlimited)]
    with replicas[0].client() as http:
        session = _parallel(http, "replica delivery")
        tasks = [
            http.post(f"/api/sessions/{session['id']}/tasks", json={"engine": "demo"}).json()
            for _ in range(RUNNERS_PER_REPLICA * len(replicas))
        ]
    watchers = [SessionClient(gw.ws_url, session["id"]) for gw in replicas for _ in range(2)]
    for watcher in watchers:
        await watcher.connect(after=0)
    runners = [TestRunner(replicas[n % 2].ws_url, task["id"]) for n, task in enumerate(tasks)]
    for runner in runners:
        await runner.connect()
    clients = [httpx.AsyncClient(base_url=gw.url, timeout=30) for gw in replicas]
    try:
        await asyncio.gather(
            *(_runner_rounds(runner, ROUNDS) for runner in runners),
            *(_submit_rounds(http, session["id"], ROUNDS) for http in clients),
        )
        with replicas[1].client() as http:
            last_seq = http.get(f"/api/sessions/{session['id']}").json()["last_seq"]
        for watcher in watchers:
            await watcher.read_until(lambda c: c.last_seq >= last_seq, timeout_s=60)
            # Whatever else is still on the socket would show a repeat.
            with contextlib.suppress(TimeoutError):
                await watcher.read_until(lambda c: False, timeout_s=0.5)
            seqs = [event["seq"] for event in watcher.events]
            assert seqs == list(range(1, last_seq + 1)), _first_fault(seqs)
            assert [f["type"] for f in watcher.control[:2]] == ["ws.hello", "ws.replayed"]
    finally:
        for http in clients:
            await http.aclose()
        for runner in runners:
            await runner.close()
        for watcher in watchers:
            await watcher.close()


def _first_fault(seqs: list[int]) -> str:
    for index, seq in enumerate(seqs):
        if seq != index + 1:
            return f"at position {index}: {seqs[max(0, index - 3) : index + 5]} (of {len(seqs)})"
    return f"{len(seqs)} events"
