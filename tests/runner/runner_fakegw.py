"""A small in-test gateway that speaks the runner protocol, and runner helpers.

It stores each ``(task_id, rseq)`` once, acks cumulatively, answers state
saves with optimistic locking, records approval requests, and can be told to
drop connections, stop acking, go away and come back on the same port, or
send cancels and decisions. Tests use it to drive real runner processes
without the real gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cmbtask_protocol import TaskSpec
from websockets.asyncio.server import Server, ServerConnection, serve

TOKEN = "test-token"


@dataclass
class TaskRecord:
    spec: TaskSpec
    frames: list[dict[str, Any]] = field(default_factory=list)  # stored once, in rseq order
    duplicates: int = 0
    gaps: int = 0
    connects: int = 0
    hellos: list[dict[str, Any]] = field(default_factory=list)
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    ws: ServerConnection | None = None
    cancel_requested: bool = False

    @property
    def acked(self) -> int:
        return len(self.frames)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [frame for frame in self.frames if frame["type"] == "event"]

    def types(self) -> list[str]:
        return [frame["event_type"] for frame in self.events]

    def final(self) -> dict[str, Any] | None:
        for frame in self.events:
            if frame["event_type"] in {"task.succeeded", "task.failed", "task.cancelled", "task.timed_out"}:
                return frame
        return None

    def output(self, stream: str | None = None) -> str:
        return "".join(
            frame["data"]["text"]
            for frame in self.events
            if frame["event_type"] == "output" and (stream is None or frame["data"]["stream"] == stream)
        )


class FakeGateway:
    def __init__(self) -> None:
        self.tasks: dict[str, TaskRecord] = {}
        self.state: dict[str, Any] | None = None
        self.state_version = 0
        self.ack = True
        #: called with (record, approval frame); may return a decision dict to send back
        self.decide: Callable[[TaskRecord, dict[str, Any]], dict[str, Any] | None] | None = None
        self.port = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_task(self, engine: str, params: dict[str, Any] | None = None, **extra: Any) -> TaskRecord:
        task_id = os.urandom(8).hex()
        session_id = extra.pop("session_id", "s-" + task_id)
        spec = TaskSpec(
            id=task_id, session_id=session_id, engine=engine, mode="one-shot", params=params or {}, **extra
        )
        record = TaskRecord(spec)
        self.tasks[task_id] = record
        return record

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", self.port, max_size=8 * 1024 * 1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Go away abruptly, as a killed gateway would (connections cut, no close frame)."""
        if self._server is None:
            return
        for record in self.tasks.values():
            if record.ws is not None:
                record.ws.transport.abort()
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    def drop(self, record: TaskRecord) -> None:
        if record.ws is not None:
            record.ws.transport.abort()

    async def send(self, record: TaskRecord, frame: dict[str, Any]) -> None:
        assert record.ws is not None, "runner not connected"
        await record.ws.send(json.dumps(frame))

    async def cancel(self, record: TaskRecord, reason: str = "cancelled by user") -> None:
        record.cancel_requested = True
        if record.ws is not None:
            await self.send(record, {"type": "cancel", "reason": reason})

    async def resolve(self, record: TaskRecord, approval_id: str, **decision: Any) -> None:
        frame = {"type": "approval.decision", "approval_id": approval_id, **decision}
        record.decisions[approval_id] = frame
        if record.ws is not None:
            await self.send(record, frame)

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        task_id = ws.request.path.rsplit("/", 1)[-1]
        if ws.request.headers.get("Authorization") != f"Bearer {TOKEN}":
            await ws.close(4401, "bad token")
            return
        record = self.tasks.get(task_id)
        if record is None:
            await ws.close(4404, "unknown task")
            return
        if record.ws is not None:
            with contextlib.suppress(Exception):
                await record.ws.close(4409, "replaced")
        record.ws = ws
        record.connects += 1
        try:
            await self._serve(ws, record)
        except Exception:
            pass
        finally:
            if record.ws is ws:
                record.ws = None

    async def _serve(self, ws: ServerConnection, record: TaskRecord) -> None:
        hello = json.loads(await ws.recv())
        record.hellos.append(hello)
        welcome = {
            "type": "welcome",
            "task": record.spec.model_dump(mode="json"),
            "acked_rseq": record.acked,
            "state": self.state,
            "state_version": self.state_version,
            "cancel_requested": record.cancel_requested,
        }
        await ws.send(json.dumps(welcome))
        for approval_id in hello.get("pending_approvals", []):
            if approval_id in record.decisions:
                await ws.send(json.dumps(record.decisions[approval_id]))
        async for raw in ws:
            await self._on_frame(ws, record, json.loads(raw))

    async def _on_frame(self, ws: ServerConnection, record: TaskRecord, frame: dict[str, Any]) -> None:
        rseq = frame.get("rseq")
        if rseq is None:
            return
        if rseq <= record.acked:
            record.duplicates += 1
        elif rseq != record.acked + 1:
            record.gaps += 1
            return
        else:
            record.frames.append(frame)
            await self._apply(ws, record, frame)
        if self.ack:
            await ws.send(json.dumps({"type": "ack", "rseq": record.acked}))

    async def _apply(self, ws: ServerConnection, record: TaskRecord, frame: dict[str, Any]) -> None:
        if frame["type"] == "state.save":
            ok = frame.get("expected_version") in (None, self.state_version)
            if ok:
                self.state, self.state_version = frame["state"], self.state_version + 1
            result = {"type": "state.result", "rseq": frame["rseq"], "ok": ok, "version": self.state_version}
            await ws.send(json.dumps(result))
        elif frame["type"] == "approval.request":
            record.approvals[frame["approval_id"]] = frame
            decision = self.decide(record, frame) if self.decide else None
            if decision is not None:
                await self.resolve(record, frame["approval_id"], **decision)


def runner_env(gw: FakeGateway, record: TaskRecord, work_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CMBTASK_") and "proxy" not in key.lower()
    }
    env.update(
        CMBTASK_TASK_ID=record.spec.id,
        CMBTASK_GATEWAY_URL=gw.url,
        CMBTASK_TASK_TOKEN=TOKEN,
        CMBTASK_WORK_DIR=str(work_dir),
        CMBTASK_FINAL_ACK_S="20",
    )
    env.update(extra)
    return env


async def start_runner(
    gw: FakeGateway, record: TaskRecord, work_dir: Path, **extra: str
) -> asyncio.subprocess.Process:
    out = _prepare(work_dir)
    with out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cmbtask_runner",
            env=runner_env(gw, record, work_dir, **extra),
            cwd=work_dir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


def _prepare(work_dir: Path) -> BinaryIO:
    work_dir.mkdir(parents=True, exist_ok=True)
    return (work_dir / "runner.out").open("ab")


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def finish(proc: asyncio.subprocess.Process, timeout_s: float = 30.0) -> int:
    """The runner's exit code; kills it if it does not exit in time."""
    try:
        return await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("runner did not exit in time") from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
