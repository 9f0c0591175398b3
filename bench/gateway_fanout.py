"""Gateway fan-out benchmark: N clients on M sessions, simulated runners.

    .venv/bin/python bench/gateway_fanout.py [--clients 200] [--sessions 50]
        [--rate 20] [--paced-s 8] [--burst 1000] [--raw-clients 1000]
        [--database-url postgresql+asyncpg://USER:PASS@HOST:PORT/DB]

Starts a real gateway process (``cmbtask up``, no executor, SQLite in a
temporary data dir; with ``--database-url`` a fresh database is created on
that PostgreSQL server and dropped afterwards) and drives it over real
sockets: a fleet process holds the N subscribed clients, this process plays
one runner per session over the runner socket. Two phases: *paced* (each
runner sends ``--rate`` output events per second for ``--paced-s``: latency
under a steady load) and *burst* (each runner sends ``--burst`` events as fast
as its socket and a 1,000-frame ack window allow: throughput). Every event
carries its send time, so latency = client receive time - runner send time.

Then the same clients and publishers run against a minimal raw
``websockets`` broadcast server (``raw_broadcast.py``), and the gateway's
delivered events/s is printed as a ratio to it; finally the raw server alone
at ``--raw-clients`` subscribers (0 skips it), with the per-channel rates
scaled down so that it delivers as many messages as the first rounds. A
third round (``--no-durable`` skips it) is the *durable* baseline: the same
raw server committing every message to SQLite before forwarding it and
acking each commit, the least any server that loses nothing does; its cost
per delivery over the raw one is the floor the gateway's ratio sits on. Each
round also prints how many cores the server, the client fleet and the
publishers used, which says who the bottleneck was; ``--profile DIR``
records the gateway with py-spy and prints where its time went. Everything
runs on 127.0.0.1 with free ports and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
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
from fleet import FleetSpec, run_fleet
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(ROOT))

from tests.support.databases import fresh_database
from tests.support.gateway import GatewayProcess
from tests.support.runner_client import runner_token

ACK_WINDOW = 1000
DURABLE = "raw websockets + SQLite commit"
CONNECT_TIMEOUT_S = 90.0
SETTLE_TIMEOUT_S = 90.0
DRAIN_GRACE_S = 20.0


def _payload(channel: str, phase: str, number: int, text_bytes: int) -> dict[str, Any]:
    text = f"{channel} {phase} {number} "
    return {
        "stream": "stdout",
        "text": text + "x" * max(0, text_bytes - len(text)),
        "ch": channel,
        "phase": phase,
        "i": number,
        "sent": time.time(),
    }


class Publisher:
    """One channel's publisher; subclasses say how a message is framed."""

    def __init__(self, url: str, channel: str, text_bytes: int) -> None:
        self.url = url
        self.channel = channel
        self.text_bytes = text_bytes
        self.ws: ClientConnection | None = None
        self.sent = 0

    async def connect(self) -> None:
        self.ws = await connect(
            self.url, compression=None, max_size=None, open_timeout=30, ping_interval=None
        )

    def frame(self, phase: str, number: int) -> str:
        raise NotImplementedError

    async def before_send(self) -> None:
        """Hook for flow control (the runner's ack window)."""

    async def send(self, phase: str, number: int) -> None:
        assert self.ws is not None
        await self.before_send()
        self.sent += 1
        await self.ws.send(self.frame(phase, number))

    async def paced(self, count: int, rate: float, offset_s: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time() + offset_s
        for number in range(count):
            delay = start + number / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.send("paced", number)

    async def burst(self, count: int) -> None:
        for number in range(count):
            await self.send("burst", number)

    async def settle(self) -> None:
        """Wait until the server has taken everything sent (if it says so)."""

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def _until_acked(publisher: Any, acks: asyncio.Event, who: str) -> None:
    """Wait until the server has acked all that ``publisher`` sent (``acks`` is set on each ack)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while publisher.acked < publisher.sent:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{who}: {publisher.sent - publisher.acked} messages never acked")
        acks.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(acks.wait(), 1.0)


class RunnerPublisher(Publisher):
    """A simulated runner: hello/welcome, numbered events, acks in a window."""

    def __init__(self, url: str, channel: str, text_bytes: int, task_id: str) -> None:
        super().__init__(url, channel, text_bytes)
        self.task_id = task_id
        self.acked = 0
        self._acks = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        headers = {"Authorization": f"Bearer {runner_token(self.task_id)}"}
        self.ws = await connect(
            self.url, additional_headers=headers, compression=None, max_size=None, open_timeout=30
        )
        await self.ws.send(json.dumps({"type": "hello", "pid": os.getpid()}))
        welcome = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"runner {self.task_id}: expected welcome, got {welcome}")
        self.acked = self.sent = welcome["acked_rseq"]
        self._reader = asyncio.create_task(self._read_acks())

    async def _read_acks(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame.get("type") == "ack":
                self.acked = max(self.acked, int(frame["rseq"]))
                self._acks.set()

    def frame(self, phase: str, number: int) -> str:
        payload = _payload(self.channel, phase, number, self.text_bytes)
        return json.dumps({"type": "event", "rseq": self.sent, "event_type": "output", "data": payload})

    async def before_send(self) -> None:
        while self.sent - self.acked >= ACK_WINDOW:
            self._acks.clear()
            await asyncio.wait_for(self._acks.wait(), SETTLE_TIMEOUT_S)

    async def settle(self) -> None:
        await _until_acked(self, self._acks, f"runner {self.task_id}")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await super().close()


class RawPublisher(Publisher):
    def frame(self, phase: str, number: int) -> str:
        payload = _payload(self.channel, phase, number, self.text_bytes)
        return json.dumps({"seq": self.sent, "session_id": self.channel, "type": "output", "data": payload})


class DurablePublisher(RawPublisher):
    """A raw publisher of the durable baseline: reads its acks (one per commit)."""

    def __init__(self, url: str, channel: str, text_bytes: int) -> None:
        super().__init__(url, channel, text_bytes)
        self.acked = 0
        self._acks = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await super().connect()
        self._reader = asyncio.create_task(self._read_acks())

    async def _read_acks(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            self.acked += int(json.loads(raw)["count"])
            self._acks.set()

    async def settle(self) -> None:
        await _until_acked(self, self._acks, self.channel)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await super().close()


@dataclass(frozen=True)
class Load:
    """What the publishers send in one round."""

    rate: float  # events/s per channel in the paced phase
    paced_s: float
    burst: int  # events per channel in the burst phase
    text_bytes: int

    @property
    def paced(self) -> int:
        return int(self.rate * self.paced_s)

    @property
    def queue_size(self) -> int:
        """Per-client queue bound: the whole round fits, so only a stuck client overflows."""
        return max(4096, self.paced + self.burst + 64)


@dataclass
class Round:
    """What one server did for one set of clients."""

    name: str
    clients: int
    channels: int
    load: Load
    connect_s: list[float] = field(default_factory=list)
    connect_failed: int = 0
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    windows_s: dict[str, float] = field(default_factory=dict)
    #: phase -> process -> CPU seconds
    cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)
    misrouted: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    rss_idle: int = 0
    rss_connected: int = 0
    rss_peak: int = 0
    wall_s: float = 0.0
    profiles: dict[str, PySpy] = field(default_factory=dict)

    def deliveries_per_s(self, phase: str) -> float:
        window = self.windows_s.get(phase, 0.0)
        received = self.phases.get(phase, {}).get("received", 0)
        return float(received / window) if window > 0 else 0.0

    def latencies(self, phase: str) -> list[float]:
        return list(self.phases.get(phase, {}).get("latencies", []))

    def lost(self) -> int:
        return sum(int(phase["lost"]) for phase in self.phases.values())

    def duplicated(self) -> int:
        return sum(int(phase["duplicated"]) for phase in self.phases.values())


async def _recv(conn: Any, timeout_s: float) -> Any:
    loop = asyncio.get_running_loop()
    ready = await loop.run_in_executor(None, conn.poll, timeout_s)
    if not ready:
        raise TimeoutError(f"no answer from the client fleet within {timeout_s}s")
    return conn.recv()


@dataclass
class _Drive:
    """One round in progress: the fleet's pipe, the meters, the publishers."""

    round: Round
    parent: Any
    publishers: list[Publisher]
    rss: PeakRss
    cpu: CpuMeter
    profile_dir: Path | None
    server_pid: int

    def profiled(self, phase: str) -> AbstractContextManager[Any]:
        if self.profile_dir is None:
            return nullcontext()
        spy = PySpy(self.server_pid, self.profile_dir / f"{self.round.name.split()[0]}-{phase}.txt")
        self.round.profiles[phase] = spy
        return spy


async def drive(
    round_: Round,
    urls: list[tuple[str, str]],
    publishers: list[Publisher],
    server_pid: int,
    profile_dir: Path | None,
) -> Round:
    """Connect the fleet, run both phases, collect the fleet's counts."""
    expected = {"paced": round_.load.paced, "burst": round_.load.burst}
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    fleet = context.Process(
        target=run_fleet, args=(FleetSpec(urls, expected, CONNECT_TIMEOUT_S), child), daemon=True
    )
    started = time.monotonic()
    with PeakRss(server_pid) as rss:
        round_.rss_idle = rss.current
        fleet.start()
        assert fleet.pid is not None
        cpu = CpuMeter(server=server_pid, fleet=fleet.pid, publishers=os.getpid())
        try:
            await _drive_phases(_Drive(round_, parent, publishers, rss, cpu, profile_dir, server_pid))
        finally:
            await asyncio.gather(*(p.close() for p in publishers), return_exceptions=True)
            fleet.join(10)
            if fleet.is_alive():
                fleet.terminate()
                fleet.join(5)
    round_.rss_peak = rss.peak
    round_.wall_s = time.monotonic() - started
    return round_


async def _drive_phases(run: _Drive) -> None:
    round_, load, publishers = run.round, run.round.load, run.publishers
    _, connected = await _recv(run.parent, CONNECT_TIMEOUT_S + 30)
    round_.connect_s, round_.connect_failed = connected["connect_s"], connected["failed"]
    round_.first_errors = connected["errors"]
    await asyncio.sleep(1.0)  # let the server settle before the connected RSS is read
    run.rss.sample()
    round_.rss_connected = run.rss.current
    await asyncio.gather(*(p.connect() for p in publishers))
    spread = 1.0 / load.rate / max(1, len(publishers))
    with run.profiled("paced"):
        run.cpu.start()
        paced_started = time.time()
        await asyncio.gather(*(p.paced(load.paced, load.rate, i * spread) for i, p in enumerate(publishers)))
        await asyncio.gather(*(p.settle() for p in publishers))
        round_.cpu_s["paced"] = run.cpu.stop()
        paced_settled = time.time()
    await asyncio.sleep(0.5)
    with run.profiled("burst"):
        run.cpu.start()
        burst_started = time.time()
        await asyncio.gather(*(p.burst(load.burst) for p in publishers))
        await asyncio.gather(*(p.settle() for p in publishers))
        run.parent.send(("drain", DRAIN_GRACE_S))
        _, result = await _recv(run.parent, DRAIN_GRACE_S + 60)
        round_.cpu_s["burst"] = run.cpu.stop()
    round_.phases = result["phases"]
    round_.misrouted, round_.errors = result["misrouted"], result["errors"]
    round_.first_errors = round_.first_errors or result["first_errors"]
    # Windows run from the first send to the last delivery, so a server that
    # falls behind shows a lower rate instead of the publishers' rate.
    last = round_.phases.get("burst", {}).get("last_recv", 0.0)
    round_.windows_s["burst"] = max(0.0, last - burst_started)
    last = round_.phases.get("paced", {}).get("last_recv", 0.0)
    round_.windows_s["paced"] = max(0.0, last - paced_started)
    # CPU was metered until the acks were in, not until the last delivery.
    round_.windows_s["paced-cpu"] = paced_settled - paced_started


def _split(clients: int, channels: int) -> list[int]:
    """Which channel each client watches: round robin, so counts differ by at most one."""
    return [index % channels for index in range(clients)]


async def _make_sessions(url: str, count: int) -> list[tuple[str, str, int]]:
    """(session id, task id, last seq) for ``count`` new sessions with one task each."""
    made: list[tuple[str, str, int]] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for number in range(count):
            session = (await http.post("/api/sessions", json={"title": f"fan-out {number}"})).json()
            path = f"/api/sessions/{session['id']}"
            task = (await http.post(f"{path}/tasks", json={"engine": "demo"})).json()
            made.append((session["id"], task["id"], (await http.get(path)).json()["last_seq"]))
    return made


async def gateway_round(args: argparse.Namespace, load: Load, data_dir: Path, database_url: str) -> Round:
    env = {
        "CMBTASK_MAX_CONCURRENT_TASKS": str(max(64, args.sessions + 8)),
        "CMBTASK_LOG_LEVEL": "WARNING",
        "CMBTASK_HEARTBEAT_S": "15",
        "CMBTASK_CLIENT_QUEUE_SIZE": str(load.queue_size),
        # One user holds every client here; the per-user limits guard against
        # a runaway user, not against a benchmark.
        "CMBTASK_MAX_SOCKETS_PER_USER": "0",
        "CMBTASK_MAX_ACTIVE_SESSIONS_PER_USER": "0",
        "CMBTASK_MAX_CONCURRENT_TASKS_PER_USER": "0",
    }
    gateway = GatewayProcess(data_dir, database_url, **env).start(timeout_s=60)
    try:
        tasks = await _make_sessions(gateway.url, args.sessions)
        urls = [
            (f"{gateway.ws_url}/ws/sessions/{tasks[c][0]}?after={tasks[c][2]}", tasks[c][0])
            for c in _split(args.clients, args.sessions)
        ]
        publishers: list[Publisher] = [
            RunnerPublisher(f"{gateway.ws_url}/ws/runner/{task_id}", session_id, load.text_bytes, task_id)
            for session_id, task_id, _ in tasks
        ]
        backend = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
        round_ = Round(f"gateway ({backend})", args.clients, args.sessions, load)
        assert gateway.process is not None
        return await drive(round_, urls, publishers, gateway.process.pid, args.profile)
    finally:
        gateway.stop()


def _start_raw_server(queue_size: int, sqlite_path: Path | None) -> subprocess.Popen[str]:
    durable = [str(sqlite_path)] if sqlite_path is not None else []
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("raw_broadcast.py")), str(queue_size), *durable],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def raw_round(
    args: argparse.Namespace, load: Load, clients: int, sqlite_path: Path | None = None
) -> Round:
    """The raw server's round; with ``sqlite_path``, the durable baseline's."""
    server = _start_raw_server(load.queue_size, sqlite_path)
    try:
        assert server.stdout is not None
        port = int(await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 30))
        channels = [f"channel-{number:04d}" for number in range(args.sessions)]
        base = f"ws://127.0.0.1:{port}"
        urls = [(f"{base}/sub/{channels[c]}", channels[c]) for c in _split(clients, len(channels))]
        kind = RawPublisher if sqlite_path is None else DurablePublisher
        publishers: list[Publisher] = [
            kind(f"{base}/pub/{channel}", channel, load.text_bytes) for channel in channels
        ]
        name = "raw websockets" if sqlite_path is None else DURABLE
        round_ = Round(name, clients, len(channels), load)
        return await drive(round_, urls, publishers, server.pid, None)
    finally:
        if server.stdin is not None:
            server.stdin.close()  # the server's signal to stop
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def _latency(round_: Round, phase: str) -> str:
    values = round_.latencies(phase)
    worst = max(values, default=float("nan"))
    return f"p50 {ms(percentile(values, 0.5))}  p99 {ms(percentile(values, 0.99))}  max {ms(worst)}"


def _cores(round_: Round, phase: str) -> str:
    window = round_.windows_s.get(f"{phase}-cpu", round_.windows_s.get(phase, 0.0))
    used = round_.cpu_s.get(phase, {})
    if window <= 0:
        return "n/a"
    return "  ".join(
        f"{name} {seconds / window:.2f} (+{used.get(f'{name}.waited', 0.0) / window:.2f} waiting)"
        for name, seconds in used.items()
        if not name.endswith(".waited")
    )


def cpu_per_delivery(round_: Round, phase: str) -> float:
    """Server CPU seconds per message delivered: unlike latencies, barely moved by other load."""
    received = round_.phases.get(phase, {}).get("received", 0)
    seconds = round_.cpu_s.get(phase, {}).get("server")
    return float("nan") if seconds is None or not received else float(seconds / received)


def _per_delivery(round_: Round) -> str:
    paced, burst = cpu_per_delivery(round_, "paced"), cpu_per_delivery(round_, "burst")
    return f"{paced * 1e6:.1f} µs / {burst * 1e6:.1f} µs  (one free core: {1 / burst:,.0f} deliveries/s)"


def _rows(round_: Round) -> list[tuple[str, str]]:
    load, per_conn = round_.load, (round_.rss_connected - round_.rss_idle) / max(1, round_.clients)
    burst = round_.phases.get("burst", {}).get("received", 0)
    burst_s = round_.windows_s.get("burst", 0.0)
    connect = round_.connect_s
    return [
        ("clients / channels", f"{round_.clients} on {round_.channels}"),
        (
            "connect p50 / p99",
            f"{ms(percentile(connect, 0.5))} / {ms(percentile(connect, 0.99))}"
            + (f"  ({round_.connect_failed} failed)" if round_.connect_failed else ""),
        ),
        (f"paced latency ({load.rate:g}/s per channel)", _latency(round_, "paced")),
        ("paced deliveries/s", f"{round_.deliveries_per_s('paced'):,.0f}"),
        ("paced cores used", _cores(round_, "paced")),
        (f"burst latency ({load.burst} per channel)", _latency(round_, "burst")),
        (
            "burst deliveries/s",
            f"{round_.deliveries_per_s('burst'):,.0f}  ({burst:,} in {burst_s:.2f} s)",
        ),
        ("burst cores used", _cores(round_, "burst")),
        ("server CPU per delivery: paced / burst", _per_delivery(round_)),
        ("lost / duplicated / misrouted", f"{round_.lost()} / {round_.duplicated()} / {round_.misrouted}"),
        (
            "client errors",
            str(round_.errors) + (f"  e.g. {round_.first_errors[0]}" if round_.first_errors else ""),
        ),
        (
            "server RSS idle / connected / peak",
            f"{mb(round_.rss_idle)} / {mb(round_.rss_connected)} / {mb(round_.rss_peak)}",
        ),
        ("RSS per connected client", f"{per_conn / 1024:.1f} KB"),
        ("wall time of the round", f"{round_.wall_s:.1f} s"),
    ]


async def run(args: argparse.Namespace) -> list[Round]:
    load = Load(args.rate, args.paced_s, args.burst, args.text_bytes)
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="cmbtask-bench-") as tmp:
        root = Path(tmp)
        if args.database_url:
            os.environ["CMBTASK_TEST_PG_URL"] = args.database_url
        with fresh_database("postgresql" if args.database_url else "sqlite", root) as url:
            rounds.append(await gateway_round(args, load, root / "data", url))
    if not args.no_raw:
        rounds.append(await raw_round(args, load, args.clients))
        if not args.no_durable and load.paced + load.burst:
            with tempfile.TemporaryDirectory(prefix="cmbtask-bench-") as tmp:
                rounds.append(await raw_round(args, load, args.clients, Path(tmp) / "durable.db"))
        if args.raw_clients:
            # As many deliveries as the first rounds, spread over more clients.
            scale = args.clients / args.raw_clients
            scaled = replace(load, rate=load.rate * scale, burst=max(1, int(load.burst * scale)))
            rounds.append(await raw_round(args, scaled, args.raw_clients))
    return rounds


def _print_profiles(round_: Round) -> None:
    for phase, spy in round_.profiles.items():
        print_profile(spy, f"gateway profile, {phase} phase")


def report(rounds: list[Round]) -> None:
    for round_ in rounds:
        print_table(f"{round_.name}: {round_.clients} clients", _rows(round_))
        _print_profiles(round_)
    gateway = rounds[0]
    raw = next((r for r in rounds[1:] if r.clients == gateway.clients and r.name != DURABLE), None)
    durable = next((r for r in rounds[1:] if r.name == DURABLE), None)
    summary = [("command", command_line()), ("load average before / after", _LOAD.describe())]
    summary.extend(_stored_rate(gateway))
    if raw is not None:
        summary.extend(_against_raw(gateway, raw))
    if raw is not None and durable is not None:
        summary.extend(_against_durable(gateway, raw, durable))
    paced = gateway.latencies("paced")
    if paced:
        p99 = percentile(paced, 0.99)
        summary.append(("gateway paced p99 (goal < 50 ms)", f"{ms(p99)}  {_verdict(p99 < 0.05)}"))
    clean = gateway.lost() == gateway.misrouted == gateway.duplicated() == 0
    summary.append(("gateway lost = duplicated = misrouted = 0", "yes" if clean else "NO"))
    print_table("summary", summary)


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _ratio_row(label: str, ours: float, theirs: float, goal: str, met: bool) -> tuple[str, str]:
    ratio = ours / theirs if theirs else float("nan")
    return (f"{label} (goal {goal})", f"{ratio:.2f}  {_verdict(met)}")


def _against_raw(gateway: Round, raw: Round) -> list[tuple[str, str]]:
    """Every figure of the issue's table as a ratio to the raw server of the same run."""
    rows: list[tuple[str, str]] = []
    if gateway.load.paced:
        cpu, raw_cpu = cpu_per_delivery(gateway, "paced"), cpu_per_delivery(raw, "paced")
        rows.append(
            _ratio_row(
                "server CPU per delivery, paced, gateway / raw", cpu, raw_cpu, "<= 2", cpu <= 2 * raw_cpu
            )
        )
    if gateway.load.burst:
        ours, theirs = gateway.deliveries_per_s("burst"), raw.deliveries_per_s("burst")
        rows.append(
            _ratio_row("burst deliveries/s, gateway / raw", ours, theirs, ">= 0.8", ours >= 0.8 * theirs)
        )
    ours, theirs = percentile(gateway.connect_s, 0.99), percentile(raw.connect_s, 0.99)
    rows.append(_ratio_row("connect p99, gateway / raw", ours, theirs, "<= 1.5", ours <= 1.5 * theirs))
    ours, theirs = _rss_per_client(gateway), _rss_per_client(raw)
    rows.append(
        _ratio_row("RSS per connected client, gateway / raw", ours, theirs, "<= 1.5", ours <= 1.5 * theirs)
    )
    return rows


def _against_durable(gateway: Round, raw: Round, durable: Round) -> list[tuple[str, str]]:
    """What committing before forwarding costs by itself, and the gateway against that floor."""
    rows: list[tuple[str, str]] = []
    for phase in ("paced", "burst") if gateway.load.paced and gateway.load.burst else ():
        floor, raw_cpu = cpu_per_delivery(durable, phase), cpu_per_delivery(raw, phase)
        ours = cpu_per_delivery(gateway, phase)
        rows.append(
            (
                f"server CPU per delivery, {phase}: durable raw / raw; gateway / durable raw",
                f"{floor / raw_cpu:.2f}; {ours / floor:.2f}",
            )
        )
    return rows


def _rss_per_client(round_: Round) -> float:
    return (round_.rss_connected - round_.rss_idle) / max(1, round_.clients)


def _stored_rate(gateway: Round) -> list[tuple[str, str]]:
    """How much of a core the gateway spent storing and fanning out the paced load."""
    window = gateway.windows_s.get("paced-cpu", 0.0)
    seconds = gateway.cpu_s.get("paced", {}).get("server")
    if not gateway.load.paced or not window or seconds is None:
        return [("gateway RSS with every client connected", mb(gateway.rss_connected))]
    stored = gateway.load.rate * gateway.channels
    return [(f"gateway cores used to store {stored:,.0f} events/s (paced)", f"{seconds / window:.2f}")]


class _LoadAverage:
    """The machine's 1-minute load before and after: other work skews every figure."""

    def __init__(self) -> None:
        self.before = os.getloadavg()[0]

    def describe(self) -> str:
        return f"{self.before:.2f} / {os.getloadavg()[0]:.2f}  ({os.cpu_count()} cores)"


_LOAD = _LoadAverage()


#: named runs of the issue's table: flags each shape sets unless given
SHAPES: dict[str, dict[str, Any]] = {
    "default": {},
    # many clients, few events each: the connect path and per-client memory
    "wide": {"clients": 1000, "sessions": 100, "rate": 2.0, "burst": 200, "raw_clients": 0},
    # subscribed clients that receive nothing: what an open socket costs
    "idle": {"clients": 10_000, "sessions": 100, "rate": 1.0, "paced_s": 0.0, "burst": 0, "raw_clients": 0},
}


def _apply_shape(args: argparse.Namespace, given: set[str]) -> None:
    for name, value in SHAPES[args.shape].items():
        if name not in given:
            setattr(args, name, value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="default",
        help="default: 200 clients / 50 sessions / 20 events/s; wide: 1,000 / 100 / 2; "
        "idle: 10,000 subscribed clients and no events (RSS per open socket)",
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--rate", type=float, default=20.0, help="events/s per session in the paced phase")
    parser.add_argument("--paced-s", type=float, default=8.0)
    parser.add_argument("--burst", type=int, default=1000, help="events per session in the burst phase")
    parser.add_argument("--text-bytes", type=int, default=80, help="size of each event's text")
    parser.add_argument("--raw-clients", type=int, default=1000, help="raw baseline's extra point (0: skip)")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw baseline")
    parser.add_argument(
        "--no-durable",
        action="store_true",
        help="skip the durable baseline (the raw server committing each message to SQLite first)",
    )
    parser.add_argument("--database-url", help="a PostgreSQL server URL (a fresh database is made on it)")
    parser.add_argument("--profile", type=Path, help="py-spy the gateway in both phases; files go here")
    return parser


def main() -> int:
    parser = _parser()
    args = parser.parse_args()
    given = {action.dest for action in parser._actions if any(a in sys.argv for a in action.option_strings)}
    _apply_shape(args, given)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    rounds = asyncio.run(run(args))
    report(rounds)
    gateway = rounds[0]
    return 0 if gateway.lost() == gateway.misrouted == gateway.duplicated() == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
