"""Local-executor benchmark: concurrent ``demo`` tasks, each in its own runner process.

    .venv/bin/python bench/tasks_local.py [--tasks 50] [--watchers 4]
        [--steps 5] [--step-delay-s 0.5] [--lines-per-step 20]

Starts ``cmbtask up`` with the local executor (SQLite in a temporary data
dir), creates one session per task and connects ``--watchers`` WebSocket
clients to each (``after=0``: they must see every event of their session),
then submits every task at once. Each task is a real runner process
(``python -m cmbtask_runner``) that prints ``[TASK_ID] step S/T line L/N``
lines through ``print``; the runner captures them into ``output`` events.

Printed when every watcher has seen its task's final event:

- submit → first event from the runner (the first event of the task after
  ``task.queued``, as the first watcher of its session receives it) p50/p99,
  next to the same figure for one task alone and the bare cost of starting
  a Python interpreter and importing the runner;
- events/s delivered to the watchers and stored, and event latency (receive
  time - the event's ``ts``, millisecond resolution) p50/p99;
- lost and duplicated events (each watcher's ``seq`` list against the
  stored log), misrouted events (another session's), mixed output (a printed
  line of another task) and lost/duplicated output lines (every line of its
  task exactly once);
- peak RSS of the gateway and of the runners (largest and median peak; a
  runner is known by the pid in its ``task.started`` event, so a fork server
  or other helper processes are not counted as runners).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from benchkit import (
    ROOT,
    CpuMeter,
    PeakRss,
    PySpy,
    command_line,
    mb,
    ms,
    percentile,
    print_profile,
    print_table,
)
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(ROOT))

from tests.support.gateway import GatewayProcess

FINAL = frozenset({"task.succeeded", "task.failed", "task.cancelled", "task.timed_out"})
LINE = re.compile(r"^\[(?P<task>[^\]]+)\] step (?P<step>\d+)/\d+ line (?P<line>\d+)/\d+$")
CONNECT_TIMEOUT_S = 60.0


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Watcher:
    """One client on one session: keeps what it needs to check delivery."""

    session_id: str
    url: str
    #: (receive time, seq, type, task id) of every stored event received
    arrivals: list[tuple[float, int, str, str | None]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    #: task id -> (step, line) -> times seen
    lines: dict[str, Counter[tuple[int, int]]] = field(default_factory=dict)
    unparsed_lines: int = 0
    #: task id -> pid its runner announced in ``task.started``
    task_pids: dict[str, int] = field(default_factory=dict)
    misrouted: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    ws: ClientConnection | None = None
    error: str | None = None

    async def connect(self) -> None:
        self.ws = await connect(self.url, compression=None, max_size=None, open_timeout=CONNECT_TIMEOUT_S)
        while json.loads(await asyncio.wait_for(self.ws.recv(), CONNECT_TIMEOUT_S))["type"] != "ws.replayed":
            pass

    async def run(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                now = time.time()
                frame = json.loads(raw)
                if "seq" in frame:
                    self.take(frame, now)
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.finished.set()

    def take(self, frame: dict[str, Any], now: float) -> None:
        if frame["session_id"] != self.session_id:
            self.misrouted += 1
            return
        self.arrivals.append((now, frame["seq"], frame["type"], frame.get("task_id")))
        self.latencies.append(now - _ts(frame["ts"]))
        if frame["type"] == "output":
            self._count_lines(frame["data"].get("text", ""))
        elif frame["type"] == "task.started" and frame["data"].get("pid") and frame.get("task_id"):
            self.task_pids[frame["task_id"]] = int(frame["data"]["pid"])
        if frame["type"] in FINAL:
            self.finished.set()

    def _count_lines(self, text: str) -> None:
        for line in text.splitlines():
            match = LINE.match(line)
            if match is None:
                self.unparsed_lines += 1
                continue
            seen = self.lines.setdefault(match["task"], Counter())
            seen[(int(match["step"]), int(match["line"]))] += 1

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


@dataclass
class Submitted:
    session_id: str
    task_id: str
    at: float  # time.time() just before the POST


@dataclass
class Outcome:
    """Everything measured in one run."""

    args: argparse.Namespace
    watchers: list[Watcher]
    submitted: list[Submitted]
    stored: dict[str, list[int]]
    phases: dict[str, str]
    gateway_rss: PeakRss
    wall_s: float
    gateway_cpu_s: float
    #: time the gateway's threads were ready to run but waited for a CPU
    gateway_waited_s: float
    alone_first_event_s: float
    interpreter_start_s: float
    profile: PySpy | None


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "steps": args.steps,
        "step_delay_s": args.step_delay_s,
        "lines_per_step": args.lines_per_step,
        "approve_plan": False,
    }


async def _new_session(http: httpx.AsyncClient, title: str) -> str:
    response = await http.post("/api/sessions", json={"title": title})
    response.raise_for_status()
    return str(response.json()["id"])


async def _submit(http: httpx.AsyncClient, session_id: str, params: dict[str, Any]) -> Submitted:
    began = time.time()
    response = await http.post(f"/api/sessions/{session_id}/tasks", json={"engine": "demo", "params": params})
    response.raise_for_status()
    return Submitted(session_id, response.json()["id"], began)


def _first_runner_event(watcher: Watcher, task_id: str) -> float | None:
    """Receive time of the task's first event after ``task.queued``."""
    for now, _, type_, event_task in watcher.arrivals:
        if event_task == task_id and type_ != "task.queued":
            return now
    return None


async def _run_alone(gateway: GatewayProcess, http: httpx.AsyncClient, args: argparse.Namespace) -> float:
    """Submit → first runner event for one task with nothing else running."""
    session_id = await _new_session(http, "bench warm-up")
    watcher = Watcher(session_id, f"{gateway.ws_url}/ws/sessions/{session_id}?after=0")
    await watcher.connect()
    reader = asyncio.create_task(watcher.run())
    submitted = await _submit(http, session_id, {**_params(args), "steps": 1, "step_delay_s": 0})
    await asyncio.wait_for(watcher.finished.wait(), 120)
    await watcher.close()
    await reader
    first = _first_runner_event(watcher, submitted.task_id)
    return float("nan") if first is None else first - submitted.at


def _interpreter_start_s(runs: int = 3) -> float:
    """Median wall time of ``python -c 'import cmbtask_runner.__main__'``: a runner's floor."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import cmbtask_runner.__main__"], check=True, timeout=60)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


async def _stored_seqs(http: httpx.AsyncClient, session_id: str) -> list[int]:
    seqs: list[int] = []
    for _ in range(1000):  # pages; bounded
        page = (
            await http.get(f"/api/sessions/{session_id}/events", params={"after": seqs[-1] if seqs else 0})
        ).json()
        seqs.extend(int(item["seq"]) for item in page["items"])
        if not page["has_more"] or not page["items"]:
            break
    return seqs


async def _wave(gateway: GatewayProcess, http: httpx.AsyncClient, args: argparse.Namespace) -> Outcome:
    sessions = [await _new_session(http, f"bench {number}") for number in range(args.tasks)]
    watchers = [
        Watcher(session_id, f"{gateway.ws_url}/ws/sessions/{session_id}?after=0")
        for session_id in sessions
        for _ in range(args.watchers)
    ]
    await asyncio.gather(*(watcher.connect() for watcher in watchers))
    readers = [asyncio.create_task(watcher.run()) for watcher in watchers]
    assert gateway.process is not None
    profile = PySpy(gateway.process.pid, args.profile / "gateway-tasks.txt") if args.profile else None
    cpu = CpuMeter(gateway=gateway.process.pid)
    with PeakRss(gateway.process.pid, children=True, interval_s=0.1) as rss, profile or nullcontext():
        cpu.start()
        began = time.monotonic()
        params = _params(args)
        submitted = await asyncio.gather(*(_submit(http, session_id, params) for session_id in sessions))
        await asyncio.wait_for(asyncio.gather(*(w.finished.wait() for w in watchers)), args.timeout_s)
        wall_s = time.monotonic() - began
        spent = cpu.stop()
        gateway_cpu_s = spent.get("gateway", float("nan"))
        gateway_waited_s = spent.get("gateway.waited", float("nan"))
    stored = {session_id: await _stored_seqs(http, session_id) for session_id in sessions}
    phases = {s.task_id: (await http.get(f"/api/tasks/{s.task_id}")).json()["phase"] for s in submitted}
    await asyncio.gather(*(watcher.close() for watcher in watchers))
    await asyncio.gather(*readers)
    return Outcome(
        args,
        watchers,
        submitted,
        stored,
        phases,
        rss,
        wall_s,
        gateway_cpu_s,
        gateway_waited_s,
        float("nan"),
        float("nan"),
        profile,
    )


async def run(args: argparse.Namespace) -> Outcome:
    interpreter_s = _interpreter_start_s()
    with tempfile.TemporaryDirectory(prefix="cmbtask-bench-tasks-") as tmp:
        env = {
            "CMBTASK_EXECUTOR": "local",
            "CMBTASK_MAX_CONCURRENT_TASKS": str(args.tasks + 8),
            "CMBTASK_LOG_LEVEL": "WARNING",
            "CMBTASK_HEARTBEAT_S": "15",
        }
        database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'cmbtask.db'}"
        gateway = GatewayProcess(Path(tmp) / "data", database_url, **env).start(timeout_s=60)
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as http:
                alone_s = await _run_alone(gateway, http, args)
                outcome = await _wave(gateway, http, args)
        finally:
            _stop_gateway_and_runners(gateway)
    outcome.alone_first_event_s, outcome.interpreter_start_s = alone_s, interpreter_s
    return outcome


def _stop_gateway_and_runners(gateway: GatewayProcess) -> None:
    """Stop the gateway, then any runner it leaves behind.

    Runners outlive their gateway on purpose (they reconnect to the next
    one); after a benchmark that gave up early nobody would come back.
    """
    descendants: list[psutil.Process] = []
    if gateway.process is not None:
        with contextlib.suppress(psutil.Error):
            descendants = psutil.Process(gateway.process.pid).children(recursive=True)
    gateway.stop()
    alive = [process for process in descendants if process.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, still = psutil.wait_procs(alive, timeout=10)
    for process in still:
        with contextlib.suppress(psutil.Error):
            process.kill()


def _line_checks(outcome: Outcome) -> tuple[int, int, int]:
    """(mixed, lost, duplicated) printed lines over all watchers."""
    args, own = outcome.args, {s.session_id: s.task_id for s in outcome.submitted}
    expected = {
        (step, line) for step in range(1, args.steps + 1) for line in range(1, args.lines_per_step + 1)
    }
    mixed = lost = duplicated = 0
    for watcher in outcome.watchers:
        task_id = own[watcher.session_id]
        mixed += sum(sum(seen.values()) for task, seen in watcher.lines.items() if task != task_id)
        seen = watcher.lines.get(task_id, Counter())
        lost += len(expected - set(seen))
        duplicated += sum(count - 1 for count in seen.values() if count > 1)
    return mixed, lost, duplicated


def _event_checks(outcome: Outcome) -> tuple[int, int]:
    """(lost, duplicated) events: each watcher's seqs against the stored log."""
    lost = duplicated = 0
    for watcher in outcome.watchers:
        seqs = [seq for _, seq, _, _ in watcher.arrivals]
        lost += len(set(outcome.stored[watcher.session_id]) - set(seqs))
        duplicated += len(seqs) - len(set(seqs))
    return lost, duplicated


def _first_events(outcome: Outcome) -> list[float]:
    first_watcher: dict[str, Watcher] = {}
    for watcher in outcome.watchers:
        first_watcher.setdefault(watcher.session_id, watcher)
    delays = []
    for submitted in outcome.submitted:
        seen = _first_runner_event(first_watcher[submitted.session_id], submitted.task_id)
        if seen is not None:
            delays.append(seen - submitted.at)
    return delays


def _start_breakdown(outcome: Outcome) -> tuple[list[float], list[float]]:
    """Per task: submit → its runner process was created, and from then → first event."""
    first_watcher: dict[str, Watcher] = {}
    for watcher in outcome.watchers:
        first_watcher.setdefault(watcher.session_id, watcher)
    offset = _create_time_offset()
    started = {pid: at - offset for pid, at in outcome.gateway_rss.children_started.items()}
    to_spawn, to_event = [], []
    for submitted in outcome.submitted:
        watcher = first_watcher[submitted.session_id]
        pid = _runner_pid(watcher, submitted.task_id)
        seen = _first_runner_event(watcher, submitted.task_id)
        if pid is None or pid not in started or seen is None:
            continue
        to_spawn.append(started[pid] - submitted.at)
        to_event.append(seen - started[pid])
    return to_spawn, to_event


def _create_time_offset() -> float:
    """How far a process's create time (boot time, in whole seconds, plus
    ticks) is off ``time.time()``: measured on a child started just now."""
    before = time.time()
    child = subprocess.Popen(["sleep", "0.2"])
    try:
        return float(psutil.Process(child.pid).create_time() - before)
    finally:
        child.wait(5)


def _runner_pid(watcher: Watcher, task_id: str) -> int | None:
    return watcher.task_pids.get(task_id)


def rows(outcome: Outcome) -> list[tuple[str, str]]:
    args, watchers = outcome.args, outcome.watchers
    first = _first_events(outcome)
    to_spawn, to_event = _start_breakdown(outcome)
    latencies = [value for watcher in watchers for value in watcher.latencies]
    delivered = sum(len(watcher.arrivals) for watcher in watchers)
    stored = sum(len(seqs) for seqs in outcome.stored.values())
    lost, duplicated = _event_checks(outcome)
    mixed, lines_lost, lines_duplicated = _line_checks(outcome)
    pids = {pid for watcher in watchers for pid in watcher.task_pids.values()}
    peaks = outcome.gateway_rss.children_peaks
    runner_peaks = sorted(peaks[pid] for pid in pids if pid in peaks) or [0]
    runner_cpu = sorted(outcome.gateway_rss.children_cpu[pid] for pid in pids if pid in peaks) or [0.0]
    first_submit = min(submitted.at for submitted in outcome.submitted) + _create_time_offset()
    created = sorted(outcome.gateway_rss.children_started[pid] - first_submit for pid in pids if pid in peaks)
    spawn_first, spawn_last = (created[0], created[-1]) if created else (float("nan"), float("nan"))
    succeeded = sum(phase == "succeeded" for phase in outcome.phases.values())
    errors = [watcher.error for watcher in watchers if watcher.error]
    return [
        (
            "tasks / watchers",
            f"{args.tasks} demo tasks, {len(watchers)} clients ({args.watchers} per session)",
        ),
        ("demo params", json.dumps(_params(args))),
        ("tasks succeeded", f"{succeeded} / {len(outcome.phases)}"),
        (
            "submit → first runner event p50 / p99",
            f"{ms(percentile(first, 0.5))} / {ms(percentile(first, 0.99))}"
            f"  (max {ms(max(first, default=0))})",
        ),
        (
            "  submit → runner process exists p50 / p99",
            f"{ms(percentile(to_spawn, 0.5))} / {ms(percentile(to_spawn, 0.99))}",
        ),
        (
            "  process exists → first event p50 / p99",
            f"{ms(percentile(to_event, 0.5))} / {ms(percentile(to_event, 0.99))}",
        ),
        ("  the same, one task alone", ms(outcome.alone_first_event_s)),
        ("  python + import cmbtask_runner, cold", ms(outcome.interpreter_start_s)),
        ("events stored / delivered", f"{stored:,} / {delivered:,}  in {outcome.wall_s:.1f} s"),
        (
            "events/s delivered / stored",
            f"{delivered / outcome.wall_s:,.0f} / {stored / outcome.wall_s:,.0f}",
        ),
        (
            "event latency p50 / p99 (ts → receive)",
            f"{ms(percentile(latencies, 0.5))} / {ms(percentile(latencies, 0.99))}",
        ),
        (
            "events lost / duplicated / misrouted",
            f"{lost} / {duplicated} / {sum(w.misrouted for w in watchers)}",
        ),
        ("output lines mixed / lost / duplicated", f"{mixed} / {lines_lost} / {lines_duplicated}"),
        ("client errors", str(len(errors)) + (f"  e.g. {errors[0]}" if errors else "")),
        (
            "runner processes created",
            f"{spawn_first:.2f} s to {spawn_last:.2f} s after the first submit",
        ),
        (
            "gateway CPU used / waited for, in the wave",
            f"{outcome.gateway_cpu_s:.1f} s ({outcome.gateway_cpu_s / outcome.wall_s:.2f} cores)"
            f" / {outcome.gateway_waited_s:.1f} s",
        ),
        (
            "runner CPU each: median / largest",
            f"{runner_cpu[len(runner_cpu) // 2]:.2f} s / {runner_cpu[-1]:.2f} s",
        ),
        ("gateway RSS peak", mb(outcome.gateway_rss.peak)),
        (
            "runner RSS peak: largest / median",
            f"{mb(runner_peaks[-1])} / {mb(statistics.median(runner_peaks))}"
            f"  ({len(pids & set(peaks))} of {len(pids)} runners sampled)",
        ),
        ("load average (1 min) after", f"{os.getloadavg()[0]:.2f}  ({os.cpu_count()} cores)"),
        ("command", command_line()),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--watchers", type=int, default=4, help="clients per session")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--step-delay-s", type=float, default=0.5)
    parser.add_argument("--lines-per-step", type=int, default=20)
    parser.add_argument("--timeout-s", type=float, default=300.0, help="bound on the whole wave")
    parser.add_argument("--profile", type=Path, help="py-spy the gateway during the wave; the file goes here")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    outcome = asyncio.run(run(args))
    print_table("local executor: concurrent demo tasks, one runner process each", rows(outcome))
    if outcome.profile is not None:
        print_profile(outcome.profile, "gateway profile during the wave")
    lost, duplicated = _event_checks(outcome)
    mixed, lines_lost, lines_duplicated = _line_checks(outcome)
    clean = lost == duplicated == mixed == lines_lost == lines_duplicated == 0
    return 0 if clean and all(phase == "succeeded" for phase in outcome.phases.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
