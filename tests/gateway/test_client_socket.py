"""The client socket ``/ws/sessions/{id}?after=N``: backlog then live in
``seq`` order, exact resumption, heartbeats, commands, bad input, and slow
consumers that are cut off without slowing anyone else.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets
from websockets.frames import Close

from tests.support.gateway import GatewayProcess
from tests.support.runner_client import TestRunner


class Watcher:
    """One client socket, read frame by frame."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, gateway: GatewayProcess, session_id: str, query: str = "", **kwargs: Any) -> Watcher:
        url = f"{gateway.ws_url}/ws/sessions/{session_id}{query}"
        return cls(await websockets.connect(url, open_timeout=10, **kwargs))

    async def frame(self, timeout_s: float = 10.0) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s))
        return frame

    async def until(
        self, match: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
    ) -> list[dict[str, Any]]:
        """Frames up to and including the first that matches (heartbeats skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        seen: list[dict[str, Any]] = []
        while True:
            frame = await self.frame(max(0.01, deadline - loop.time()))
            if frame["type"] != "ws.heartbeat":
                seen.append(frame)
            if match(frame):
                return seen

    async def events_through(self, seq: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        frames = await self.until(lambda f: f.get("seq", 0) >= seq, timeout_s)
        return [f for f in frames if "seq" in f]

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def close(self) -> None:
        await self.ws.close()


async def closed_with(ws: Any, timeout_s: float = 10.0) -> Close:
    """Read until the server closes; the close frame it sent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), max(0.01, deadline - loop.time()))
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd


def _session(gateway: GatewayProcess) -> str:
    with gateway.client() as client:
        response = client.post("/api/sessions", json={"title": "socket test"})
        assert response.status_code == 201
        session_id: str = response.json()["id"]
        return session_id


def _submit(gateway: GatewayProcess, session_id: str, **task: Any) -> str:
    with gateway.client() as client:
        response = client.post(f"/api/sessions/{session_id}/tasks", json={"engine": "demo", **task})
        assert response.status_code == 201, response.text
        task_id: str = response.json()["id"]
        return task_id


def _seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


async def test_backlog_then_live_in_seq_order(shared_gateway: GatewayProcess) -> None:
    sid = _session(shared_gateway)
    task_id = _submit(shared_gateway, sid)
    _submit(shared_gateway, sid)
    watcher = await Watcher.open(shared_gateway, sid)
    hello = await watcher.frame()
    assert hello == {"type": "ws.hello", "session_id": sid, "after": 0, "last_seq": 2, "heartbeat_s": 2.0}
    backlog = await watcher.until(lambda f: f["type"] == "ws.replayed")
    assert [f.get("seq") for f in backlog] == [1, 2, None]
    assert backlog[-1] == {"type": "ws.replayed", "last_seq": 2}
    assert backlog[0]["type"] == "task.queued" and backlog[0]["task_id"] == task_id

    # Live: a REST submission and a runner's events, interleaved with nothing.
    _submit(shared_gateway, sid)
    runner = TestRunner(shared_gateway.ws_url, task_id)
    await runner.connect()
    await runner.send_event("task.started", {"engine": "demo", "mode": "one-shot"})
    for line in range(30):
        await runner.send_event("output", {"stream": "stdout", "text": f"line {line}"})
    live = await watcher.events_through(34)
    assert _seqs(live) == list(range(3, 35))
    assert [e["data"]["text"] for e in live if e["type"] == "output"] == [f"line {n}" for n in range(30)]
    assert all(e["session_id"] == sid and e["v"] == 1 for e in live)
    await runner.close()
    await watcher.close()


async def test_reconnect_after_n_gets_exactly_the_rest(shared_gateway: GatewayProcess) -> None:
    sid = _session(shared_gateway)
    for _ in range(6):
        _submit(shared_gateway, sid)
    first = await Watcher.open(shared_gateway, sid)
    seen = await first.events_through(4)
    await first.close()
    assert _seqs(seen) == [1, 2, 3, 4]
    _submit(shared_gateway, sid)  # seq 7, while nobody listens

    again = await Watcher.open(shared_gateway, sid, "?after=4")
    hello = await again.frame()
    assert hello["after"] == 4 and hello["last_seq"] == 7
    rest = await again.until(lambda f: f["type"] == "ws.replayed")
    assert [f.get("seq") for f in rest] == [5, 6, 7, None]
    _submit(shared_gateway, sid)
    assert _seqs(await again.events_through(8)) == [8]
    # Nothing more arrives but heartbeats: no duplicate of anything already sent.
    assert (await again.frame(5))["type"] == "ws.heartbeat"
    await again.close()

    # A cursor past the end starts at the end: the next event is not swallowed.
    past_the_end = await Watcher.open(shared_gateway, sid, "?after=100")
    assert (await past_the_end.frame())["after"] == 8
    assert (await past_the_end.frame())["type"] == "ws.replayed"  # and no events before it
    _submit(shared_gateway, sid)
    assert _seqs(await past_the_end.events_through(9)) == [9]
    await past_the_end.close()


async def test_heartbeats_carry_the_cursor(shared_gateway: GatewayProcess) -> None:
    sid = _session(shared_gateway)
    _submit(shared_gateway, sid)
    watcher = await Watcher.open(shared_gateway, sid)
    await watcher.until(lambda f: f["type"] == "ws.replayed")
    loop = asyncio.get_running_loop()
    started = loop.time()
    beats = [await watcher.frame(5), await watcher.frame(5)]
    elapsed = loop.time() - started
    assert beats == [{"type": "ws.heartbeat", "last_seq": 1}] * 2
    assert 3.0 <= elapsed <= 8.0, elapsed  # every 2 s in tests
    await watcher.close()


async def test_heartbeats_count_from_the_last_frame_sent(shared_gateway: GatewayProcess) -> None:
    # The socket's heartbeat timer is moved only when it fires, not at every
    # event: while events keep coming no heartbeat is sent, and once they
    # stop the first one comes a heartbeat interval after the last event.
    sid = _session(shared_gateway)
    task_id = _submit(shared_gateway, sid)
    watcher = await Watcher.open(shared_gateway, sid)
    await watcher.until(lambda f: f["type"] == "ws.replayed")
    runner = TestRunner(shared_gateway.ws_url, task_id)
    await runner.connect()
    loop = asyncio.get_running_loop()
    during: list[dict[str, Any]] = []
    for n in range(7):  # 0.7 s apart for ~5 s: past two heartbeat intervals of 2 s
        await runner.send_event("output", {"stream": "stdout", "text": f"tick {n}"})
        while not (during and during[-1].get("data", {}).get("text") == f"tick {n}"):
            during.append(await watcher.frame(5))
        last_event_at = loop.time()
        await asyncio.sleep(0.7)
    assert [f["type"] for f in during if f["type"] == "ws.heartbeat"] == []
    beat = await watcher.frame(5)
    waited = loop.time() - last_event_at
    assert beat == {"type": "ws.heartbeat", "last_seq": during[-1]["seq"]}
    assert 1.5 <= waited <= 4.5, waited
    await runner.close()
    await watcher.close()


async def test_commands_over_the_socket(shared_gateway: GatewayProcess) -> None:
    sid = _session(shared_gateway)
    watcher = await Watcher.open(shared_gateway, sid)
    await watcher.until(lambda f: f["type"] == "ws.replayed")

    await watcher.send({"type": "ping", "id": "p1"})
    assert await watcher.frame() == {"type": "ws.pong", "id": "p1"}

    await watcher.send(
        {"type": "submit_task", "id": "s1", "task": {"engine": "demo", "prompt": "via socket"}}
    )
    frames = await watcher.until(lambda f: f["type"] == "ws.result")
    result = frames[-1]
    assert result["id"] == "s1" and result["ok"] is True and result["result"]["prompt"] == "via socket"
    task_id = result["result"]["id"]
    queued = [f for f in frames if f["type"] == "task.queued"] or await watcher.events_through(1)
    assert queued[0]["task_id"] == task_id

    # An approval requested by the task's runner, resolved from the socket.
    runner = TestRunner(shared_gateway.ws_url, task_id)
    await runner.connect()
    _, approval_id = await runner.request_approval("Proceed?", options=["approve", "reject"])
    await watcher.until(lambda f: f["type"] == "approval.requested")
    await watcher.send(
        {"type": "resolve_approval", "id": "r1", "approval_id": approval_id, "decision": "reject"}
    )
    frames = await watcher.until(lambda f: f["type"] == "ws.result")
    assert frames[-1]["result"]["status"] == "rejected" and frames[-1]["result"]["resolved_by"] == "local"
    decision = await runner.receive("approval.decision")
    assert decision["approval_id"] == approval_id and decision["status"] == "rejected"
    await watcher.send(
        {"type": "resolve_approval", "id": "r2", "approval_id": approval_id, "decision": "approve"}
    )
    refused = await watcher.until(lambda f: f["type"] == "ws.error")
    assert refused[-1]["id"] == "r2" and refused[-1]["code"] == "already_resolved"
    await runner.close()

    # Cancel a queued task: it ends at once, and the socket sees it.
    other = _submit(shared_gateway, sid)
    await watcher.send({"type": "cancel_task", "id": "c1", "task_id": other})
    frames = await watcher.until(lambda f: f["type"] == "ws.result")
    assert frames[-1]["result"]["phase"] == "cancelled"
    cancelled = [f for f in frames if f["type"] == "task.cancelled"]
    if not cancelled:
        cancelled = [f for f in await watcher.until(lambda f: f["type"] == "task.cancelled")]
    assert cancelled[-1]["task_id"] == other
    await watcher.send({"type": "cancel_task", "id": "c2", "task_id": other})
    assert (await watcher.until(lambda f: f["type"] == "ws.error"))[-1]["code"] == "already_finished"
    await watcher.close()


async def test_bad_commands_get_errors_and_the_socket_keeps_working(shared_gateway: GatewayProcess) -> None:
    sid = _session(shared_gateway)
    watcher = await Watcher.open(shared_gateway, sid)
    await watcher.until(lambda f: f["type"] == "ws.replayed")

    await watcher.send("{not json")
    error = await watcher.frame()
    assert error["type"] == "ws.error" and error["code"] == "bad_command" and "JSON" in error["message"]
    await watcher.send({"type": "teleport", "id": "t1"})
    unknown = await watcher.frame()
    assert unknown["code"] == "bad_command" and "type" in unknown["message"]
    await watcher.send({"type": "ping", "flavour": "mint"})
    assert (await watcher.frame())["code"] == "bad_command"
    await watcher.send(b"\xff\xfe not utf-8")
    assert (await watcher.frame())["code"] == "bad_frame"
    await watcher.send({"type": "submit_task", "id": "e1", "task": {"engine": "warp-drive"}})
    refused = await watcher.frame()
    assert refused == {
        "type": "ws.error",
        "id": "e1",
        "code": "unknown_engine",
        "message": refused["message"],
    }
    assert "demo" in refused["message"]
    await watcher.send({"type": "cancel_task", "id": "e2", "task_id": "no-such-task"})
    assert (await watcher.frame())["code"] == "not_found"

    await watcher.send({"type": "ping", "id": "still-here"})
    assert await watcher.frame() == {"type": "ws.pong", "id": "still-here"}
    with shared_gateway.client() as client:
        assert client.get(f"/api/sessions/{sid}").json()["last_seq"] == 0  # nothing stored
    await watcher.close()


async def test_bad_frames_in_a_row_close_the_socket(shared_gateway: GatewayProcess) -> None:
    sid = _session(shared_gateway)
    watcher = await Watcher.open(shared_gateway, sid)
    await watcher.until(lambda f: f["type"] == "ws.replayed")
    # A good command in between resets the count.
    for _ in range(9):
        await watcher.send("nonsense")
    await watcher.send({"type": "ping", "id": "ok"})
    for _ in range(9):
        await watcher.send("nonsense")
    frames = await watcher.until(lambda f: f.get("id") == "ok")
    assert [f["type"] for f in frames] == ["ws.error"] * 9 + ["ws.pong"]
    for _ in range(9):
        assert (await watcher.frame())["code"] == "bad_command"
    await watcher.send("the tenth in a row")
    assert (await watcher.frame())["code"] == "bad_command"
    close = await closed_with(watcher.ws)
    assert close.code == 4400 and "malformed" in close.reason


async def test_oversized_frame_closes_with_1009(shared_gateway: GatewayProcess) -> None:
    sid = _session(shared_gateway)
    watcher = await Watcher.open(shared_gateway, sid)
    await watcher.until(lambda f: f["type"] == "ws.replayed")
    prompt = "x" * (256 * 1024)
    await watcher.send({"type": "submit_task", "task": {"engine": "demo", "prompt": prompt}})
    close = await closed_with(watcher.ws)
    assert close.code == 1009 and str(256 * 1024) in close.reason
    with shared_gateway.client() as client:
        assert client.get(f"/api/sessions/{sid}/tasks").json() == []


@pytest.mark.parametrize(
    ("target", "query", "code", "reason"),
    [
        ("missing", "", 4404, "not found"),
        ("session", "?after=abc", 4400, "after must be"),
        ("session", "?after=-1", 4400, "after must be"),
    ],
)
async def test_refused_subscriptions(
    shared_gateway: GatewayProcess, target: str, query: str, code: int, reason: str
) -> None:
    sid = _session(shared_gateway) if target == "session" else "00000000-0000-0000-0000-000000000000"
    watcher = await Watcher.open(shared_gateway, sid, query)
    close = await closed_with(watcher.ws)
    assert close.code == code and reason in close.reason


async def test_a_misbehaving_client_does_not_disturb_another(shared_gateway: GatewayProcess) -> None:
    sid = _session(shared_gateway)
    task_id = _submit(shared_gateway, sid)
    good = await Watcher.open(shared_gateway, sid)
    await good.until(lambda f: f["type"] == "ws.replayed")
    runner = TestRunner(shared_gateway.ws_url, task_id)
    await runner.connect()

    async def misbehave() -> list[int]:
        """Three ways to be a bad client; the close codes of the first two."""
        flood = await Watcher.open(shared_gateway, sid)
        for _ in range(10):
            await flood.send("{{{")
        oversized = await Watcher.open(shared_gateway, sid)
        await oversized.send("y" * (300 * 1024))
        codes = [(await closed_with(flood.ws)).code, (await closed_with(oversized.ws)).code]
        vanishing = await Watcher.open(shared_gateway, sid)
        await vanishing.send({"type": "resolve_approval", "approval_id": "nope", "decision": "approve"})
        await vanishing.send(b"\x80")
        vanishing.ws.transport.abort()  # gone without a close handshake
        return codes

    async def publish() -> None:
        for n in range(100):
            await runner.send_event("output", {"stream": "stdout", "text": f"n{n}"})
            if n % 10 == 0:
                await asyncio.sleep(0.01)

    codes, _ = await asyncio.gather(misbehave(), publish())
    assert codes == [4400, 1009]
    events = await good.events_through(101)
    assert _seqs(events) == list(range(2, 102))
    assert [e["data"]["text"] for e in events] == [f"n{n}" for n in range(100)]
    await runner.close()
    await good.close()


def _small_buffer_socket(port: int) -> socket.socket:
    """A client socket that can hold only a little unread data, so that a
    client that stops reading pushes back on the gateway quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def _slow_consumers(http: httpx.AsyncClient) -> float:
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith("cmbtask_slow_consumers_total "):
            return float(line.split()[1])
    raise AssertionError("cmbtask_slow_consumers_total missing from /metrics")


async def test_a_burst_larger_than_the_queue_does_not_cut_off_readers(gateway_factory: Any) -> None:
    # The gateway stores a runner's burst in batches of up to hundreds of
    # events; a client that reads must not be taken for a slow one.
    gateway = gateway_factory(CMBTASK_CLIENT_QUEUE_SIZE="16")
    sid = _session(gateway)
    task_id = _submit(gateway, sid)
    readers = [await Watcher.open(gateway, sid) for _ in range(2)]
    for reader in readers:
        await reader.until(lambda f: f["type"] == "ws.replayed")
    runner = TestRunner(gateway.ws_url, task_id)
    await runner.connect()
    for n in range(300):
        await runner.send_event("output", {"stream": "stdout", "text": f"burst {n}"})
    await runner.wait_acked(300, timeout_s=30)
    for reader in readers:
        assert _seqs(await reader.events_through(301)) == list(range(2, 302))
        await reader.close()
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert await _slow_consumers(http) == 0
    await runner.close()


async def test_slow_consumer_is_cut_off_and_replays_without_gaps(gateway_factory: Any) -> None:
    gateway = gateway_factory(CMBTASK_CLIENT_QUEUE_SIZE="16")
    sid = _session(gateway)
    task_id = _submit(gateway, sid)
    fast = await Watcher.open(gateway, sid)
    await fast.until(lambda f: f["type"] == "ws.replayed")
    slow = await Watcher.open(
        gateway, sid, sock=_small_buffer_socket(gateway.port), max_queue=1, max_size=None
    )
    await slow.until(lambda f: f["type"] == "ws.replayed")
    # From here on ``slow`` reads nothing until the stream is over.

    runner = TestRunner(gateway.ws_url, task_id)
    await runner.connect()
    fast_seqs: list[int] = []
    target = [2**31]  # the last seq, once known
    caught_up = asyncio.Event()

    async def read_fast() -> None:
        while True:
            frame = json.loads(await fast.ws.recv())
            if "seq" in frame:
                fast_seqs.append(frame["seq"])
                if frame["seq"] >= target[0]:
                    caught_up.set()

    reader = asyncio.create_task(read_fast())
    text = "z" * 16_000
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        # Publish until the gateway gives up on the slow client: the kernel's
        # socket buffers (up to a few MB) absorb the first part of the stream.
        # The bound is far above what any buffer holds.
        while runner.rseq < 2000 and await _slow_consumers(http) == 0:
            for _ in range(8):
                await runner.send_event("output", {"stream": "stdout", "text": f"{runner.rseq + 1}:{text}"})
            # Small bursts: a client that reads keeps up with every one of them.
            await runner.wait_acked(runner.rseq, timeout_s=30)
        assert await _slow_consumers(http) == 1, "the slow client was never cut off"
        for _ in range(8):  # and the stream goes on
            await runner.send_event("output", {"stream": "stdout", "text": f"{runner.rseq + 1}:{text}"})
        await runner.wait_acked(runner.rseq, timeout_s=30)
    last = runner.rseq + 1  # task.queued was seq 1
    target[0] = last
    if fast_seqs and fast_seqs[-1] >= last:
        caught_up.set()
    await asyncio.wait_for(caught_up.wait(), 30)
    reader.cancel()
    assert fast_seqs == list(range(2, last + 1))  # the reader got every event, in order, once

    received: list[int] = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        for _ in range(10_000):  # bounded: the close comes long before
            frame = json.loads(await asyncio.wait_for(slow.ws.recv(), 10))
            if "seq" in frame:
                received.append(frame["seq"])
    close = closed.value.rcvd
    assert close is not None and close.code == 4408, close
    cursor = received[-1]
    assert f"after={cursor}" in close.reason
    assert received == list(range(2, cursor + 1)) and cursor < last

    resumed = await Watcher.open(gateway, sid, f"?after={cursor}")
    rest = await resumed.events_through(last, timeout_s=30)
    assert _seqs(rest) == list(range(cursor + 1, last + 1))
    await resumed.close()
    await runner.close()
    await fast.close()


async def test_approval_resolved_by_a_second_client_after_the_first_left(
    shared_gateway: GatewayProcess,
) -> None:
    sid = _session(shared_gateway)
    task_id = _submit(shared_gateway, sid)
    runner = TestRunner(shared_gateway.ws_url, task_id)
    await runner.connect()
    await runner.send_event("task.started", {"engine": "demo", "mode": "one-shot"})

    first = await Watcher.open(shared_gateway, sid)
    _, approval_id = await runner.request_approval("Ship it?")
    requested = (await first.until(lambda f: f["type"] == "approval.requested"))[-1]
    assert requested["data"]["approval_id"] == approval_id
    await first.close()  # e.g. a closed laptop

    second = await Watcher.open(shared_gateway, sid, f"?after={requested['seq']}")
    await second.until(lambda f: f["type"] == "ws.replayed")
    await second.send(
        {"type": "resolve_approval", "id": "a", "approval_id": approval_id, "decision": "approve"}
    )
    frames = await second.until(lambda f: f["type"] == "ws.result")
    assert frames[-1]["result"]["status"] == "approved"
    resolved = [f for f in frames if f["type"] == "approval.resolved"] or await second.until(
        lambda f: f["type"] == "approval.resolved"
    )
    assert resolved[-1]["data"]["approval_id"] == approval_id and resolved[-1]["seq"] == requested["seq"] + 1
    decision = await runner.receive("approval.decision")
    assert decision["approval_id"] == approval_id and decision["status"] == "approved"
    await second.close()
    await runner.close()


async def test_racing_decisions_have_exactly_one_winner(shared_gateway: GatewayProcess) -> None:
    sid = _session(shared_gateway)
    task_id = _submit(shared_gateway, sid)
    runner = TestRunner(shared_gateway.ws_url, task_id)
    await runner.connect()
    rseq, approval_id = await runner.request_approval("Which way?")
    await runner.wait_acked(rseq)
    url = f"/api/approvals/{approval_id}/resolve"
    async with httpx.AsyncClient(base_url=shared_gateway.url, timeout=30) as http:
        answers = await asyncio.gather(
            *(http.post(url, json={"decision": "approve" if n % 2 else "reject"}) for n in range(12))
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200] + [409] * 11
        winner = next(a.json() for a in answers if a.status_code == 200)
        losers = [a.json() for a in answers if a.status_code == 409]
        assert all(body["code"] == "already_resolved" for body in losers)
        assert all(body["detail"]["status"] == winner["status"] for body in losers)
        events = (await http.get(f"/api/sessions/{sid}/events")).json()["items"]
    assert [e["type"] for e in events].count("approval.resolved") == 1
    decision = await runner.receive("approval.decision")
    assert decision["status"] == winner["status"]
    with pytest.raises(TimeoutError):
        await runner.receive("approval.decision", timeout_s=1)
    await runner.close()
