"""Many clients on many sessions: each gets exactly its own session's events."""

from __future__ import annotations

import asyncio

from tests.support.clients import SessionClient
from tests.support.gateway import GatewayProcess
from tests.support.runner_client import TestRunner

SESSIONS = 20
CLIENTS_PER_SESSION = 3
LINES = 60


async def _publish(runner: TestRunner, marker: str) -> None:
    await runner.connect()
    for line in range(LINES):
        await runner.send_event("output", {"stream": "stdout", "text": f"{marker} {line}"})
        if line % 10 == 9:
            await asyncio.sleep(0)  # interleave sessions rather than send one burst each
    await runner.wait_acked(LINES, timeout_s=60)
    await runner.close()


async def test_sixty_clients_twenty_sessions_exact_delivery(gateway: GatewayProcess) -> None:
    sessions: list[tuple[str, str]] = []
    with gateway.client() as http:
        for number in range(SESSIONS):
            session = http.post("/api/sessions", json={"title": f"fan-out {number}"}).json()
            task = http.post(f"/api/sessions/{session['id']}/tasks", json={"engine": "demo"}).json()
            sessions.append((session["id"], task["id"]))
    clients = {
        session_id: [SessionClient(gateway.ws_url, session_id) for _ in range(CLIENTS_PER_SESSION)]
        for session_id, _ in sessions
    }
    everyone = [client for group in clients.values() for client in group]
    await asyncio.gather(*(client.connect(after=0) for client in everyone))
    runners = [TestRunner(gateway.ws_url, task_id) for _, task_id in sessions]
    await asyncio.gather(
        *(_publish(runner, session_id) for runner, (session_id, _) in zip(runners, sessions, strict=False))
    )

    def complete(client: SessionClient) -> bool:
        return len(client.of_type("output")) >= LINES

    await asyncio.gather(*(client.read_until(complete, timeout_s=60) for client in everyone))
    for session_id, group in clients.items():
        for client in group:
            texts = [event["data"]["text"] for event in client.of_type("output")]
            assert texts == [f"{session_id} {line}" for line in range(LINES)]
            assert {event["session_id"] for event in client.events} == {session_id}
            seqs = [event["seq"] for event in client.events]
            assert seqs == list(range(1, len(seqs) + 1)), "gap or duplicate in seq"
    await asyncio.gather(*(client.close() for client in everyone))
