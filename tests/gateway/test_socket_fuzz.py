"""Both sockets under hostile input, from a seeded RNG, in bounded loops.

Each bad frame gets an error frame, or the socket a close code with a reason;
meanwhile a well-behaved client on another session receives every event in
order; afterwards the gateway holds as many asyncio tasks and sockets as
before (``cmbtask_asyncio_tasks``, the process's sockets on its port) and no
stored event has changed.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from cmbtask_protocol import ClientCommand, RunnerOutbound
from pydantic import TypeAdapter, ValidationError

from tests.support.fuzzing import Bystander, baseline, event_rows, mutate, settled
from tests.support.gateway import GatewayProcess
from tests.support.raw_ws import OP_BINARY, OP_CLOSE, OP_TEXT, RawSocket
from tests.support.runner_client import TestRunner, runner_token

SEED = 20261202
pytestmark = pytest.mark.timeout(600)  # bounded loops, but slow on a busy machine
ROUNDS = 60  # mutated frames per socket
CLIENT_COMMANDS: list[dict[str, Any]] = [
    {"type": "ping", "id": "p"},
    {"type": "submit_task", "id": "s", "task": {"engine": "demo", "prompt": "fuzz", "params": {"steps": 1}}},
    {"type": "resolve_approval", "id": "r", "approval_id": "a" * 16, "decision": "approve"},
    {"type": "cancel_task", "id": "c", "task_id": "t" * 16},
]
RUNNER_FRAMES: list[dict[str, Any]] = [
    {"type": "event", "rseq": 1, "event_type": "output", "data": {"stream": "stdout", "text": "x"}},
    {"type": "approval.request", "rseq": 1, "approval_id": "b" * 16, "prompt": "ok?"},
    {"type": "state.save", "rseq": 1, "state": {"k": 1}},
]
_client_commands: TypeAdapter[Any] = TypeAdapter(ClientCommand)
_runner_frames: TypeAdapter[Any] = TypeAdapter(RunnerOutbound)


def _valid(adapter: TypeAdapter[Any], text: str) -> Any:
    try:
        return adapter.validate_json(text)
    except ValidationError:
        return None


@pytest.fixture
async def fuzzed(
    gateway_factory: Callable[..., GatewayProcess], database_url: str
) -> AsyncIterator[tuple[GatewayProcess, Bystander]]:
    """A gateway with a bystander publishing; the checks that follow any fuzz."""
    gateway = gateway_factory(CMBTASK_CLIENT_QUEUE_SIZE="16")
    bystander = await Bystander.start(gateway)
    await bystander.publish(5)
    before = await baseline(gateway)
    stored = event_rows(database_url)
    yield gateway, bystander
    await bystander.received_everything()
    await settled(gateway, before)
    after = event_rows(database_url)
    assert {row_id: after.get(row_id) for row_id in stored} == stored, "a stored event changed"
    await bystander.runner.close()
    await bystander.ws.close()


def _session_and_task(gateway: GatewayProcess) -> tuple[str, str]:
    with gateway.client() as client:
        session_id = client.post("/api/sessions", json={"title": "fuzz"}).json()["id"]
        task = client.post(f"/api/sessions/{session_id}/tasks", json={"engine": "demo"})
        return session_id, task.json()["id"]


async def _client_round(ws: Any, text: str | bytes, probe: str) -> list[dict[str, Any]]:
    """Send one frame, then a ping; the control frames up to its pong."""
    await ws.send(text)
    await ws.send(json.dumps({"type": "ping", "id": probe}))
    frames: list[dict[str, Any]] = []
    for _ in range(1000):  # bounded: the pong comes long before
        frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if frame == {"type": "ws.pong", "id": probe}:
            return frames
        if "seq" not in frame and frame["type"] not in {"ws.hello", "ws.replayed", "ws.heartbeat"}:
            frames.append(frame)
    raise AssertionError(f"no pong for {probe}")


async def _closed(ws: Any) -> Any:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        for _ in range(10_000):
            await asyncio.wait_for(ws.recv(), 15)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd


def _frames_after_close(raw: RawSocket, late: list[bytes]) -> None:
    """Close, then send more: the gateway answers the close (1000), or, when
    it has already hung up, the late frames meet a closed connection; either
    way it read no further (the leak and event checks see the rest)."""
    raw.send_close(1000, "bye")
    try:
        for payload in late:
            raw.send_frame(OP_TEXT if payload.startswith(b"{") else OP_BINARY, payload)
        close_frame = raw.recv_until_close()
    except OSError:  # reset or broken pipe: it hung up after its close frame
        return
    assert close_frame.opcode == OP_CLOSE and close_frame.close_code == 1000


async def _send_too_much(ws: Any, payload: str | bytes) -> Any:
    """The close frame a frame over the limit earns; the gateway may close
    while the frame is still being written."""
    try:
        await ws.send(payload)
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed without a close frame"
        return closed.rcvd
    return await _closed(ws)


async def test_client_socket_fuzz(fuzzed: tuple[GatewayProcess, Bystander]) -> None:
    gateway, bystander = fuzzed
    rng = random.Random(SEED)
    session_id, _ = _session_and_task(gateway)
    url = f"{gateway.ws_url}/ws/sessions/{session_id}"
    publishing = asyncio.create_task(bystander.publish(200))

    async with websockets.connect(url, open_timeout=15, max_size=None) as ws:
        for number in range(ROUNDS):
            text = mutate(rng, rng.choice(CLIENT_COMMANDS))
            frame: str | bytes = text.encode() if rng.random() < 0.25 else text  # UTF-8 binary is taken too
            answers = await _client_round(ws, frame, f"probe-{number}")
            if _valid(_client_commands, text) is None:
                assert [a["type"] for a in answers] == ["ws.error"], (text[:200], answers)
                assert answers[0]["code"] == "bad_command" and answers[0]["message"]
            else:  # a command that parses gets its answer or nothing (no id), never a crash
                assert all(a["type"] in {"ws.result", "ws.error", "ws.pong"} for a in answers), answers
        answers = await _client_round(ws, b"\xff\xfe\x00 not UTF-8", "binary")
        assert [(a["type"], a["code"]) for a in answers] == [("ws.error", "bad_frame")]

    for huge in ("h" * (300 * 1024), b"h" * (300 * 1024)):
        async with websockets.connect(url, open_timeout=15, max_size=None) as ws:
            close = await _send_too_much(ws, huge)
            assert close.code == 1009 and str(256 * 1024) in close.reason

    # A text frame that is not UTF-8 never reaches the gateway: uvicorn's
    # WebSocket layer closes with 1007 ("invalid frame payload data"), the
    # standard code for it, and no reason text of its own.
    raw = await asyncio.to_thread(RawSocket.connect, gateway.port, f"/ws/sessions/{session_id}")
    await asyncio.to_thread(raw.send_frame, OP_TEXT, b'{"type": "ping", "id": "\xc3\x28"}')
    close_frame = await asyncio.to_thread(raw.recv_until_close)
    assert close_frame.close_code == 1007
    raw.close()

    # Frames after our close: the gateway answers the close and reads no further.
    raw = await asyncio.to_thread(RawSocket.connect, gateway.port, f"/ws/sessions/{session_id}")
    await asyncio.to_thread(_frames_after_close, raw, [b'{"type": "ping", "id": "late"}', b"\x00\x01"])
    raw.close()

    # Cursors that are not numbers the database can hold.
    for after in ("\u00b2", "9" * 5000, "-1", "1e3", "2147483648", " 1"):
        async with websockets.connect(f"{url}?after={quote(after)}", open_timeout=15) as ws:
            close = await _closed(ws)
            assert close.code == 4400 and "after must be" in close.reason, (after, close)

    # Gone without a close handshake, halfway through a command.
    vanishing = await websockets.connect(url, open_timeout=15)
    await vanishing.send('{"type": "submit_task", "task": {"engine": "demo"')
    vanishing.transport.abort()
    await publishing


def _small_buffer_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def _slow_consumers(gateway: GatewayProcess) -> float:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        for line in (await http.get("/metrics")).text.splitlines():
            if line.startswith("cmbtask_slow_consumers_total "):
                return float(line.split()[1])
    raise AssertionError("cmbtask_slow_consumers_total missing")


async def test_a_client_that_never_reads_is_cut_off(fuzzed: tuple[GatewayProcess, Bystander]) -> None:
    gateway, bystander = fuzzed
    slow = await websockets.connect(
        f"{gateway.ws_url}/ws/sessions/{bystander.session_id}",
        sock=_small_buffer_socket(gateway.port),
        max_queue=1,
        max_size=None,
        open_timeout=15,
    )
    # Large events until the gateway gives up on it (bounded far above any buffer).
    for _ in range(250):
        if await _slow_consumers(gateway) > 0:
            break
        await bystander.publish(8, pause_s=0, size=16_000)
    assert await _slow_consumers(gateway) == 1, "the client that never reads was never cut off"
    close = await _closed(slow)
    assert close.code == 4408 and "reconnect with after=" in close.reason


async def _runner_closed(runner: TestRunner) -> Any:
    return await _closed(runner.ws)


async def test_runner_socket_fuzz(fuzzed: tuple[GatewayProcess, Bystander]) -> None:
    gateway, bystander = fuzzed
    rng = random.Random(SEED + 1)
    session_id, task_id = _session_and_task(gateway)
    _, other_task = _session_and_task(gateway)
    publishing = asyncio.create_task(bystander.publish(200))
    silent = await websockets.connect(
        f"{gateway.ws_url}/ws/runner/{other_task}",
        additional_headers={"Authorization": f"Bearer {runner_token(other_task)}"},
        open_timeout=15,
    )  # says no hello: closed after the hello timeout, checked at the end

    # A token for another task, and no token at all.
    for token in (runner_token(other_task), ""):
        async with websockets.connect(
            f"{gateway.ws_url}/ws/runner/{task_id}",
            additional_headers={"Authorization": f"Bearer {token}"} if token else {},
            open_timeout=15,
        ) as ws:
            close = await _closed(ws)
            assert close.code == 4401 and close.reason

    runner = TestRunner(gateway.ws_url, task_id)
    await runner.connect()
    invalid = errors = 0
    for _ in range(ROUNDS):
        text = mutate(rng, rng.choice(RUNNER_FRAMES))
        frame = _valid(_runner_frames, text)
        if frame is None:
            invalid += 1
            await runner.ws.send(text.encode() if rng.random() < 0.25 else text)
        if frame is not None or invalid % 5 == 0:
            # A valid frame in between: numbered in turn, it is stored and acked,
            # and it shows every bad frame before it was answered.
            await runner.send_event("output", {"stream": "stdout", "text": "between"})
            await runner.wait_acked(runner.rseq)
            errors += sum(1 for f in runner.inbox if f["type"] == "error")
            runner.inbox = [f for f in runner.inbox if f["type"] != "error"]
            assert errors == invalid
    await runner.send_event("output", {"stream": "stdout", "text": "last"})
    await runner.wait_acked(runner.rseq)
    assert errors + sum(1 for f in runner.inbox if f["type"] == "error") == invalid

    # Old rseqs again, with other data: acked, stored events untouched.
    stored_through = runner.rseq
    for old in (1, 2, stored_through):
        await runner.send_event("output", {"stream": "stdout", "text": "REPLAYED"}, rseq=old)
    await runner.send_event("output", {"stream": "stdout", "text": "after the replay"})
    await runner.wait_acked(runner.rseq)

    # A future rseq: refused with the one expected, nothing stored.
    await runner.send_event("output", {"stream": "stdout", "text": "from the future"}, rseq=runner.rseq + 50)
    close = await _runner_closed(runner)
    assert close.code == 4400 and "skips" in close.reason
    welcome = await runner.connect()
    assert welcome["acked_rseq"] == stored_through + 1
    runner.rseq = welcome["acked_rseq"]

    # Binary that is not UTF-8, then a huge frame.
    await runner.ws.send(b"\x80\x81")
    assert (await runner.receive("error"))["code"] == "bad_frame"
    close = await _send_too_much(runner.ws, "z" * (4 * 1024 * 1024 + 10))
    assert close.code == 1009 and close.reason

    # A text frame that is not UTF-8, and frames after a close.
    path = f"/ws/runner/{task_id}"
    headers = {"Authorization": f"Bearer {runner_token(task_id)}"}
    raw = await asyncio.to_thread(RawSocket.connect, gateway.port, path, headers)
    await asyncio.to_thread(raw.send_frame, OP_TEXT, b'{"type": "hello", "pid": "\xff"}')
    assert (await asyncio.to_thread(raw.recv_until_close)).close_code == 1007
    raw.close()
    raw = await asyncio.to_thread(RawSocket.connect, gateway.port, path, headers)
    await asyncio.to_thread(_frames_after_close, raw, [b'{"type": "hello"}'])
    raw.close()

    close = await _closed(silent)
    assert close.code == 4400 and "no hello" in close.reason
    await publishing
    with gateway.client() as client:
        events = client.get(f"/api/sessions/{session_id}/events", params={"limit": 5000}).json()["items"]
    texts = [e["data"].get("text") for e in events if e["type"] == "output"]
    assert texts == ["between"] * (len(texts) - 2) + ["last", "after the replay"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def test_half_open_connections_are_closed(
    gateway_factory: Callable[..., GatewayProcess], database_url: str
) -> None:
    """Peers that vanish without a word: one that stops answering pings, one
    that shut its side down; both sockets are closed and nothing stays."""
    gateway = gateway_factory(CMBTASK_WS_PING_INTERVAL_S="1", CMBTASK_WS_PING_TIMEOUT_S="1")
    session_id, task_id = _session_and_task(gateway)
    before = await baseline(gateway)
    client = await asyncio.to_thread(RawSocket.connect, gateway.port, f"/ws/sessions/{session_id}")
    runner = await asyncio.to_thread(
        RawSocket.connect,
        gateway.port,
        f"/ws/runner/{task_id}",
        {"Authorization": f"Bearer {runner_token(task_id)}"},
    )
    await asyncio.to_thread(runner.send_frame, OP_TEXT, json.dumps({"type": "hello", "pid": 1}).encode())
    # Neither answers a ping from here on: the gateway's keepalive gives up on both.
    for peer in (client, runner):
        close_frame = await asyncio.to_thread(peer.recv_until_close, 20.0)
        assert close_frame.close_code == 1011 and "ping" in close_frame.close_reason
        peer.close()
    shut = await asyncio.to_thread(RawSocket.connect, gateway.port, f"/ws/sessions/{session_id}")
    shut.sock.shutdown(socket.SHUT_WR)
    await settled(gateway, before)
    shut.close()
    await settled(gateway, before)
