"""What one PostgreSQL server does per event the gateways store: the database side of sizing.

    .venv/bin/python bench/pg_ingest.py --database-url "$(bash scripts/postgres.sh)"
        [--replicas 2] [--sessions 40] [--rate 20] [--seconds 8] [--events 0]

Starts ``--replicas`` gateway processes (``cmbtask up``, no executor) on one
fresh database of that PostgreSQL server and plays one simulated runner per
session (``gateway_fanout.py``'s runner: hello, numbered ``output`` events,
acks), the runners spread round robin over the replicas; no client subscribes,
so what is measured is the ingest path alone: runner frame → group commit →
ack. Sessions send ``--rate`` events/s each for ``--seconds`` (the paced shape
real tasks produce); ``--events N`` instead sends N per session as fast as the
ack window allows (the burst shape, the most events per commit).

From the start of the first send to the last ack it measures: events stored
(``count(*)``), the database's commits and inserted rows
(``pg_stat_database``), the CPU of the PostgreSQL backends serving this
database (their pids from ``pg_stat_activity``; the server's shared WAL
writer and checkpointer are not counted) and of each gateway replica, and the
bytes the events table takes per row. Divided out: events/s achieved, events
per commit, PostgreSQL CPU per event and the events/s one PostgreSQL core
would commit at that shape. On a small machine the gateways, not the database,
are the bottleneck, so the last figure is the one that sizes a server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from benchkit import ROOT, command_line, print_table
from gateway_fanout import RunnerPublisher, _make_sessions
from sqlalchemy.engine import make_url

sys.path.insert(0, str(ROOT))

from tests.support.databases import fresh_database
from tests.support.gateway import GatewayProcess

GATEWAY_ENV = {
    "CMBTASK_LOG_LEVEL": "WARNING",
    "CMBTASK_HEARTBEAT_S": "15",
    "CMBTASK_MAX_SOCKETS_PER_USER": "0",
    "CMBTASK_MAX_ACTIVE_SESSIONS_PER_USER": "0",
    "CMBTASK_MAX_CONCURRENT_TASKS_PER_USER": "0",
    # A runner's pong queues behind its unread window of frames; on a starved machine the
    # default 20 s keepalive timeout dropped runners mid-burst (they would reconnect and
    # resend; these simulated ones do not).
    "CMBTASK_WS_PING_TIMEOUT_S": "120",
}
STATS_FLUSH_S = 11.0  # an idle backend publishes its pg_stat counters within 10 s (PostgreSQL 15+)


@dataclass(frozen=True)
class Stats:
    """The database's counters at one moment."""

    events: int
    commits: int
    inserted: int
    backend_cpu_s: dict[int, float]
    events_bytes: int


def _connect(url: str) -> Any:
    import psycopg2  # type: ignore[import-untyped]

    parsed = make_url(url)
    return psycopg2.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
    )


def _cpu_s(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def read_stats(url: str) -> Stats:
    """A new connection each time: a connection caches pg_stat figures for its transaction."""
    name = make_url(url).database
    conn = _connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*), pg_total_relation_size('events') FROM events")
            events, size = cursor.fetchone()
            cursor.execute(
                "SELECT xact_commit, tup_inserted FROM pg_stat_database WHERE datname = %s", (name,)
            )
            commits, inserted = cursor.fetchone()
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
            )
            pids = [row[0] for row in cursor.fetchall()]
        conn.rollback()
    finally:
        conn.close()
    cpu = {pid: seconds for pid in pids if (seconds := _cpu_s(pid)) is not None}
    return Stats(int(events), int(commits), int(inserted), cpu, int(size))


def backend_cpu_between(before: Stats, after: Stats) -> float:
    """CPU the backends used in between; one that connected in between counts whole."""
    return sum(seconds - before.backend_cpu_s.get(pid, 0.0) for pid, seconds in after.backend_cpu_s.items())


async def _send(args: argparse.Namespace, runners: list[RunnerPublisher]) -> None:
    if args.events:
        await asyncio.gather(*(runner.burst(args.events) for runner in runners))
    else:
        count, spread = int(args.rate * args.seconds), 1.0 / args.rate / max(1, len(runners))
        await asyncio.gather(*(r.paced(count, args.rate, i * spread) for i, r in enumerate(runners)))
    await asyncio.gather(*(runner.settle() for runner in runners))


async def measure(
    args: argparse.Namespace, gateways: list[GatewayProcess], url: str
) -> list[tuple[str, str]]:
    tasks = await _make_sessions(gateways[0].url, args.sessions)
    runners = [
        RunnerPublisher(
            f"{gateways[n % len(gateways)].ws_url}/ws/runner/{task_id}", session_id, args.text_bytes, task_id
        )
        for n, (session_id, task_id, _) in enumerate(tasks)
    ]
    await asyncio.gather(*(runner.connect() for runner in runners))
    replicas = [psutil.Process(g.process.pid) for g in gateways if g.process is not None]
    await asyncio.sleep(STATS_FLUSH_S)
    before = await asyncio.to_thread(read_stats, url)
    gateway_cpu = [sum(p.cpu_times()[:2]) for p in replicas]
    started = time.monotonic()
    try:
        await _send(args, runners)
    finally:
        window = time.monotonic() - started
        gateway_cpu = [sum(p.cpu_times()[:2]) - cpu for p, cpu in zip(replicas, gateway_cpu, strict=True)]
        await asyncio.gather(*(runner.close() for runner in runners), return_exceptions=True)
    sent = sum(runner.sent for runner in runners)
    await asyncio.sleep(STATS_FLUSH_S)
    after = await asyncio.to_thread(read_stats, url)
    return _rows(args, sent, window, before, after, gateway_cpu)


def _rows(
    args: argparse.Namespace, sent: int, window: float, before: Stats, after: Stats, gateway_cpu: list[float]
) -> list[tuple[str, str]]:
    stored, commits = after.events - before.events, after.commits - before.commits
    pg_cpu = backend_cpu_between(before, after)
    per_event = pg_cpu / stored if stored else float("nan")
    shape = f"burst, {args.events} per session" if args.events else f"paced, {args.rate:g}/s per session"
    return [
        ("command", command_line()),
        ("shape", f"{args.replicas} replicas, {args.sessions} runners, {shape}"),
        ("events sent / stored", f"{sent:,} / {stored:,}" + ("" if sent == stored else "  MISMATCH")),
        ("window (first send → last ack)", f"{window:.2f} s"),
        ("events/s stored", f"{stored / window:,.0f}"),
        (
            "commits (all of this database's) / events per commit",
            f"{commits:,} / {stored / max(1, commits):.1f}",
        ),
        ("rows inserted per event", f"{(after.inserted - before.inserted) / max(1, stored):.2f}"),
        ("PostgreSQL backends' CPU / cores", f"{pg_cpu:.2f} s / {pg_cpu / window:.2f}"),
        ("PostgreSQL CPU per event", f"{per_event * 1e6:.0f} µs"),
        ("events/s one PostgreSQL core would commit (this shape)", f"{1 / per_event:,.0f}"),
        ("gateway CPU per event, all replicas", f"{sum(gateway_cpu) / max(1, stored) * 1e6:.0f} µs"),
        ("gateway cores, each replica", "  ".join(f"{cpu / window:.2f}" for cpu in gateway_cpu)),
        ("events table bytes per row (with indexes)", f"{after.events_bytes / max(1, after.events):,.0f}"),
        ("load average (1 min)", f"{os.getloadavg()[0]:.2f}  ({os.cpu_count()} cores)"),
    ]


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    os.environ["CMBTASK_TEST_PG_URL"] = args.database_url
    with tempfile.TemporaryDirectory(prefix="cmbtask-pg-ingest-") as tmp, ExitStack() as stack:
        url = stack.enter_context(fresh_database("postgresql", Path(tmp)))
        env = {**GATEWAY_ENV, "CMBTASK_MAX_CONCURRENT_TASKS": str(args.sessions + 8)}
        gateways: list[GatewayProcess] = []
        for number in range(args.replicas):  # one after the other: the first one migrates
            gateways.append(GatewayProcess(Path(tmp) / f"gw{number}", url, **env).start(timeout_s=90))
            stack.callback(gateways[-1].stop)
        return await measure(args, gateways, url)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server URL")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--rate", type=float, default=20.0, help="events/s per session (paced shape)")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the paced shape runs")
    parser.add_argument("--events", type=int, default=0, help="N per session as fast as acks allow instead")
    parser.add_argument("--text-bytes", type=int, default=80)
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    print_table("PostgreSQL ingest", rows)
    return 0 if "MISMATCH" not in rows[2][1] else 1


if __name__ == "__main__":
    raise SystemExit(main())
