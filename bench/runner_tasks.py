"""Real runners benchmark: N concurrent ``demo`` tasks, M WebSocket watchers.

    .venv/bin/python bench/runner_tasks.py [--tasks 50] [--clients 200]
        [--steps 5] [--step-delay-s 1.0] [--lines-per-step 20]

Starts a real gateway process (``cmbtask up`` with the local executor and
SQLite in a temporary data dir), creates one session per task, connects the
clients (round robin over the sessions, each from ``after=0``), then submits
every task at once: each runs in its own runner process. When all tasks have
finished and every client has every stored event of its session, it prints:

- submit → first runner event (``task.started`` seen by a client) p50/p99
- events/s delivered to clients while the tasks ran, and event latency
  (client receive time minus the runner's event timestamp) p50/p99
- lost (stored but never received), duplicated, misrouted (another session's
  event) and mixed-output (another task's printed line) counts
- peak RSS of the gateway and of one runner (the largest runner peak)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from benchkit import ROOT, PeakRss, command_line, mb, ms, percentile, print_table
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(ROOT))

from tests.support.gateway import GatewayProcess

FINAL = {"task.succeeded", "task.failed", "task.cancelled", "task.timed_out"}
RUN_TIMEOUT_S = 600.0


@dataclass
class Watcher:
    """One WebSocket client on one session, counting what it gets."""

    session_id: str
    url: str
    seqs: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    received_at: dict[str, float] = field(default_factory=dict)  # event type + task → first arrival
    misrouted: int = 0
    mixed: int = 0
    events: int = 0
    ws: ClientConnection | None = None

    async def run(self, task_ids: dict[str, str], stop: asyncio.Event) -> None:
        async with connect(self.url, compression=None, max_size=None, open_timeout=60) as ws:
            self.ws = ws
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                self._count(json.loads(raw), task_ids, time.time())

    def _count(self, frame: dict[str, Any], task_ids: dict[str, str], now: float) -> None:
        if "seq" not in frame:
            return  # ws.hello, ws.replayed, heartbeats
        self.events += 1
        self.seqs.append(frame["seq"])
        if frame["session_id"] != self.session_id:
            self.misrouted += 1
        # The task id is known once its submit returned; its first events may come earlier.
        own_task = task_ids.get(self.session_id) or frame.get("task_id") or ""
        if frame["type"] == "output":
            for line in frame["data"].get("text", "").splitlines():
                if line.startswith("[") and not line.startswith(f"[{own_task}]"):
                    self.mixed += 1
        if frame.get("task_id") == own_task and frame["type"] != "task.queued":
            sent = datetime.fromisoformat(frame["ts"].replace("Z", "+00:00")).timestamp()
            self.latencies.append(now - sent)
        self.received_at.setdefault(frame["type"], now)


async def _setup(gateway: GatewayProcess, args: argparse.Namespace) -> list[str]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        sessions = []
        for number in range(args.tasks):
            response = await http.post("/api/sessions", json={"title": f"bench {number}"})
            sessions.append(response.json()["id"])
    return sessions


async def _submit_all(
    gateway: GatewayProcess, sessions: list[str], args: argparse.Namespace, answered: list[float]
) -> tuple[dict[str, str], dict[str, float]]:
    params = {"steps": args.steps, "step_delay_s": args.step_delay_s, "lines_per_step": args.lines_per_step}

    async def submit(http: httpx.AsyncClient, session_id: str) -> tuple[str, str, float]:
        began = time.time()
        response = await http.post(
            f"/api/sessions/{session_id}/tasks", json={"engine": "demo", "params": params}
        )
        response.raise_for_status()
        answered.append(time.time() - began)
        return session_id, response.json()["id"], began

    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        done = await asyncio.gather(*(submit(http, session_id) for session_id in sessions))
    return {s: t for s, t, _ in done}, {s: began for s, _, began in done}


async def _wait_finished(gateway: GatewayProcess, task_ids: dict[str, str]) -> dict[str, str]:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    phases: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        while time.monotonic() < deadline:
            for task_id in task_ids.values():
                if phases.get(task_id) in {"succeeded", "failed", "cancelled", "timed_out"}:
                    continue
                phases[task_id] = (await http.get(f"/api/tasks/{task_id}")).json()["phase"]
            if all(p in {"succeeded", "failed", "cancelled", "timed_out"} for p in phases.values()):
                return phases
            await asyncio.sleep(0.5)
    raise TimeoutError(f"tasks still running after {RUN_TIMEOUT_S} s: {phases}")


async def _stored_seqs(gateway: GatewayProcess, sessions: list[str]) -> dict[str, list[int]]:
    stored: dict[str, list[int]] = {}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        for session_id in sessions:
            page = (await http.get(f"/api/sessions/{session_id}/events", params={"limit": 5000})).json()
            stored[session_id] = [event["seq"] for event in page["items"]]
    return stored


async def _drain(watchers: list[Watcher], stored: dict[str, list[int]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(set(stored[w.session_id]) <= set(w.seqs) for w in watchers):
            return
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="cmbtask-bench-runners-") as tmp:
        env = {
            "CMBTASK_EXECUTOR": "local",
            "CMBTASK_MAX_CONCURRENT_TASKS": str(args.tasks + 8),
            "CMBTASK_LOG_LEVEL": "WARNING",
            "CMBTASK_HEARTBEAT_S": "15",
        }
        data_dir = Path(tmp) / "data"
        gateway = GatewayProcess(data_dir, f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", **env).start(60)
        try:
            submitted: dict[str, float] = {}
            rows = await _measure(gateway, args, submitted)
            return rows[:3] + _breakdown(data_dir, submitted) + rows[3:]
        finally:
            gateway.stop()


def _breakdown(data_dir: Path, submitted: dict[str, float]) -> list[tuple[str, str]]:
    """Where the time to first event goes, from the launch files and runner logs."""
    to_dispatch, to_launch, to_welcome = [], [], []
    for launch_file in data_dir.glob("tasks/*/launch.json"):
        launch = json.loads(launch_file.read_text())
        running = _stamp(launch_file.parent / "runner.log", "runner.start")
        welcomed = _stamp(launch_file.parent / "runner.log", "link.welcome")
        if launch["task_id"] in submitted:
            to_dispatch.append(launch["time"] - submitted[launch["task_id"]])
        if running is not None and welcomed is not None:
            to_launch.append(running - launch["time"])
            to_welcome.append(welcomed - running)
    return [
        (
            "  submit → launched p50 / p99",
            f"{ms(percentile(to_dispatch, 0.5))} / {ms(percentile(to_dispatch, 0.99))}",
        ),
        (
            "  launch → runner running p50 / p99",
            f"{ms(percentile(to_launch, 0.5))} / {ms(percentile(to_launch, 0.99))}",
        ),
        (
            "  runner running → welcome p50 / p99",
            f"{ms(percentile(to_welcome, 0.5))} / {ms(percentile(to_welcome, 0.99))}",
        ),
    ]


def _stamp(log_path: Path, event: str) -> float | None:
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == event:
            return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
    return None


async def _measure(
    gateway: GatewayProcess, args: argparse.Namespace, by_task: dict[str, float]
) -> list[tuple[str, str]]:
    assert gateway.process is not None
    sessions = await _setup(gateway, args)
    watchers = [
        Watcher(
            sessions[n % len(sessions)], f"{gateway.ws_url}/ws/sessions/{sessions[n % len(sessions)]}?after=0"
        )
        for n in range(args.clients)
    ]
    task_ids: dict[str, str] = {}
    stop = asyncio.Event()
    clients = [asyncio.create_task(w.run(task_ids, stop)) for w in watchers]
    for _ in range(600):
        if all(w.ws is not None for w in watchers):
            break
        await asyncio.sleep(0.1)
    with PeakRss(gateway.process.pid, children=True) as rss:
        started = time.time()
        answered: list[float] = []
        ids, submitted = await _submit_all(gateway, sessions, args, answered)
        task_ids.update(ids)
        by_task.update({ids[session_id]: began for session_id, began in submitted.items()})
        phases = await _wait_finished(gateway, task_ids)
        run_s = time.time() - started
        stored = await _stored_seqs(gateway, sessions)
        await _drain(watchers, stored)
    stop.set()
    await asyncio.gather(*clients, return_exceptions=True)
    rows = _rows(watchers, stored, submitted, phases, run_s, rss, args)
    answer = percentile(answered, 0.5), percentile(answered, 0.99)
    return [
        *rows[:3],
        ("  submit → POST answered p50 / p99", f"{ms(answer[0])} / {ms(answer[1])}"),
        *rows[3:],
    ]


def _rows(
    watchers: list[Watcher],
    stored: dict[str, list[int]],
    submitted: dict[str, float],
    phases: dict[str, str],
    run_s: float,
    rss: PeakRss,
    args: argparse.Namespace,
) -> list[tuple[str, str]]:
    first = [
        w.received_at["task.started"] - submitted[w.session_id]
        for w in watchers
        if "task.started" in w.received_at
    ]
    latencies = [value for w in watchers for value in w.latencies]
    lost = sum(len(set(stored[w.session_id]) - set(w.seqs)) for w in watchers)
    duplicated = sum(len(w.seqs) - len(set(w.seqs)) for w in watchers)
    delivered = sum(w.events for w in watchers)
    mixed = sum(w.mixed for w in watchers)
    runner_peak = max(rss.children_peaks.values(), default=0)
    succeeded = sum(phase == "succeeded" for phase in phases.values())
    return [
        (
            "tasks / clients",
            f"{args.tasks} demo tasks ({args.steps} steps, {args.lines_per_step} lines/step), "
            f"{args.clients} clients",
        ),
        ("tasks succeeded", f"{succeeded} / {len(phases)}"),
        (
            "submit → first runner event p50 / p99",
            f"{ms(percentile(first, 0.5))} / {ms(percentile(first, 0.99))}  ({len(first)} clients saw it)",
        ),
        ("events stored / delivered", f"{sum(len(s) for s in stored.values()):,} / {delivered:,}"),
        ("events/s delivered (submit to last finish)", f"{delivered / run_s:,.0f}  over {run_s:.1f} s"),
        ("event latency p50 / p99", f"{ms(percentile(latencies, 0.5))} / {ms(percentile(latencies, 0.99))}"),
        (
            "lost / duplicated / misrouted / mixed output",
            f"{lost} / {duplicated} / {sum(w.misrouted for w in watchers)} / {mixed}",
        ),
        ("gateway RSS peak", mb(rss.peak)),
        (
            "one runner RSS peak (largest)",
            f"{mb(runner_peak)}  ({len(rss.children_peaks)} processes sampled)",
        ),
        ("command", command_line()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--step-delay-s", type=float, default=1.0)
    parser.add_argument("--lines-per-step", type=int, default=20)
    args = parser.parse_args()
    print_table("real runners: demo tasks under the local executor", asyncio.run(run(args)))


if __name__ == "__main__":
    main()
