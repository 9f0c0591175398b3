"""Failover with real parts: gateway replicas on one PostgreSQL server behind HAProxy.

Three ``cmbtask gateway`` processes (local executor) share a PostgreSQL
server of this module's own and sit behind HAProxy (``leastconn``, no
stickiness, ``/readyz`` health checks), all started here on loopback ports.
Clients and runners only know the balancer. The tests break one part at a
time while demo tasks run and clients watch:

- SIGKILL of a replica: its clients and runners reconnect through the
  balancer to the others; every client sees every event exactly once, in
  order (what the database holds), and the time to recover is reported;
- a PostgreSQL restart: every replica reports ``/readyz`` false meanwhile,
  rides it out, and loses nothing;
- a replica started while the others run: it joins without a restart of
  anyone, and what it stores reaches clients of the others.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.clients import SessionClient
from tests.support.databases import BACKENDS
from tests.support.gateway import GatewayProcess
from tests.support.pg_server import PgServer
from tests.support.replica_cluster import ReplicaCluster, migrate
from tests.support.roaming_client import RoamingClient
from tests.support.runner_client import TestRunner
from tests.support.stored import FINAL, StoredState

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="replicas share PostgreSQL (CMBTASK_TEST_DBS)"),
]

#: long enough that a replica dies (or the database restarts) while every task runs
DEMO = {"steps": 14, "step_delay_s": 0.4, "lines_per_step": 3, "chatter": False}
#: a join needs tasks that finish soon, not a long run
SHORT = {"steps": 6, "step_delay_s": 0.3, "lines_per_step": 2, "chatter": False}
RECOVERY_P99_BOUND_S = 15.0


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    server = PgServer().init()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def replicas(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaCluster]:
    """One cluster for the module (starting one costs tens of seconds on a
    loaded machine); each test works in sessions of its own."""
    started = ReplicaCluster(tmp_path_factory.mktemp("replicas"), pg)
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture
def cluster(replicas: ReplicaCluster) -> ReplicaCluster:
    """The module's cluster; a replica an earlier test killed stays dead (each
    test works with the replicas alive, ``alive()``)."""
    assert len(replicas.alive()) >= 2, "a failover needs two replicas alive"
    return replicas


# ---- helpers ------------------------------------------------------------------------------


# The test's event loop also answers 200 clients' pings: nothing here may block it.


async def _sessions(http: httpx.AsyncClient, count: int) -> list[str]:
    async def one(n: int) -> str:
        response = await http.post("/api/sessions", json={"title": f"failover {n}"})
        assert response.status_code == 201, response.text
        session_id: str = response.json()["id"]
        return session_id

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def _submit(
    http: httpx.AsyncClient, session_ids: list[str], params: dict[str, Any] = DEMO
) -> list[str]:
    async def one(session_id: str) -> str:
        body = {"engine": "demo", "params": params}
        response = await http.post(f"/api/sessions/{session_id}/tasks", json=body)
        assert response.status_code == 201, response.text
        task_id: str = response.json()["id"]
        return task_id

    return list(await asyncio.gather(*(one(sid) for sid in session_ids)))


async def _watch(ws_url: str, session_ids: list[str], per_session: int) -> list[RoamingClient]:
    clients = [RoamingClient(ws_url, sid) for sid in session_ids for _ in range(per_session)]
    for client in clients:
        client.start()
    async with asyncio.timeout(60):
        await asyncio.gather(*(client.connected.wait() for client in clients))
    return clients


async def _settle(clients: list[RoamingClient], stored: StoredState, timeout_s: float = 60) -> None:
    """Wait until every client holds its session's last event, then a little
    longer (a repeat still on its way would show), then stop them."""
    last = stored.last_seqs(sorted({client.session_id for client in clients}))
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(c.wait_for_seq(last[c.session_id], timeout_s) for c in clients))
        await asyncio.sleep(1.0)
    finally:
        await asyncio.gather(*(client.stop() for client in clients))


def _assert_exactly_once(clients: list[RoamingClient], stored: StoredState) -> None:
    truth = {sid: stored.events(sid) for sid in {client.session_id for client in clients}}
    for client in clients:
        seen = [{key: event[key] for key in ("seq", "type", "task_id", "data")} for event in client.events]
        seqs = [event["seq"] for event in seen]
        assert seqs == list(range(1, len(truth[client.session_id]) + 1)), _first_fault(seqs)
        assert seen == truth[client.session_id]


def _first_fault(seqs: list[int]) -> str:
    for index, seq in enumerate(seqs):
        if seq != index + 1:
            return f"at position {index}: {seqs[max(0, index - 3) : index + 5]} (of {len(seqs)})"
    return f"{len(seqs)} events"


def _assert_tasks_complete(stored: StoredState, task_ids: list[str], params: dict[str, Any] = DEMO) -> None:
    """Every task succeeded, every output line stored once in order, no frame twice."""
    assert set(stored.phases(task_ids).values()) == {"succeeded"}
    steps, lines = params["steps"], params["lines_per_step"]
    for task_id in task_ids:
        expected = "".join(
            f"[{task_id}] step {s}/{steps} line {n}/{lines}\n"
            for s in range(1, steps + 1)
            for n in range(1, lines + 1)
        )
        assert stored.output_text(task_id) == expected, task_id
    assert stored.repeated_rseqs() == []


def _running(phase: str) -> bool:
    return phase == "running"


def _final(phase: str) -> bool:
    return phase in FINAL


def _runner_connects(cluster: ReplicaCluster, task_id: str) -> int:
    """How many times the task's runner was welcomed by a gateway (its own log)."""
    (log,) = cluster.root.glob(f"g*/tasks/{task_id}/runner.log")
    return log.read_text().count("link.welcome")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# ---- a replica's LISTEN connection drops ------------------------------------------------------


async def test_a_replica_hears_what_was_stored_while_its_listen_connection_was_down(
    pg: PgServer, tmp_path: Path
) -> None:
    """PostgreSQL drops every LISTEN connection when it restarts, and a
    notification sent before the replica listens again is never delivered:
    the replica must catch up by itself, or its clients wait for the next event."""
    database_url = pg.create_database()
    await asyncio.to_thread(migrate, database_url)
    writer, watcher = (
        GatewayProcess(tmp_path / name, database_url, component=True, CMBTASK_AUTO_MIGRATE="false")
        for name in ("writer", "watcher")
    )
    try:
        await asyncio.gather(*(asyncio.to_thread(gw.start, 60) for gw in (writer, watcher)))
        async with httpx.AsyncClient(base_url=writer.url, timeout=30) as http:
            (session_id,) = await _sessions(http, 1)
            (task_id,) = await _submit(http, [session_id])
        client = SessionClient(watcher.ws_url, session_id)
        await client.connect(after=0)
        runner = TestRunner(writer.ws_url, task_id)
        await runner.connect()
        await runner.wait_acked(await runner.send_event("output", {"stream": "stdout", "text": "before\n"}))
        await client.read_until(lambda c: bool(c.of_type("output")))
        await asyncio.to_thread(pg.stop)
        await _wait_readiness([writer, watcher], 503, 20)
        await asyncio.sleep(3.0)  # the watcher's reconnect attempts back off meanwhile
        await asyncio.to_thread(pg.start)
        await _wait_readiness([writer], 200, 30)
        after = await runner.send_event("output", {"stream": "stdout", "text": "after\n"})
        await runner.wait_acked(after, timeout_s=30)
        # Nothing else is stored in the session: only catching up delivers it.
        await client.read_until(lambda c: len(c.of_type("output")) == 2, timeout_s=20)
        assert [e["seq"] for e in client.events] == list(range(1, len(client.events) + 1))
        await runner.close()
        await client.close()
    finally:
        writer.stop()
        watcher.stop()


# ---- a replica dies ---------------------------------------------------------------------------


async def test_sigkill_of_a_replica_loses_nothing_and_its_clients_recover_in_seconds(
    cluster: ReplicaCluster,
) -> None:
    stored = StoredState(cluster.database_url)
    async with cluster.client() as http:
        session_ids = await _sessions(http, 20)
        clients = await _watch(cluster.ws_url, session_ids, per_session=10)
        task_ids = await _submit(http, session_ids)
    try:
        started = await asyncio.to_thread(stored.wait_phases, task_ids, _running, 90, "running")
        by_replica = {gw.port: await cluster.connections(gw) for gw in cluster.alive()}
        # The replica with the most runners (then clients) dies: the most to recover.
        victim = max(
            cluster.alive(), key=lambda gw: (by_replica[gw.port]["runner"], by_replica[gw.port]["client"])
        )
        doomed = by_replica[victim.port]
        assert doomed["runner"] >= 1 and doomed["client"] >= 1, by_replica
        killed_at = time.monotonic()
        victim.kill()
        finished = await asyncio.to_thread(stored.wait_phases, task_ids, _final, 120, "finished")
        await _settle(clients, stored)
    finally:
        await asyncio.gather(*(client.stop() for client in clients))

    _assert_tasks_complete(stored, task_ids)
    _assert_exactly_once(clients, stored)
    affected = [client for client in clients if client.outages]
    assert all(len(client.outages) == 1 and client.outages[0].dropped_at >= killed_at for client in affected)
    assert len(affected) == doomed["client"], (len(affected), by_replica)
    reconnected = [task_id for task_id in task_ids if _runner_connects(cluster, task_id) > 1]
    assert len(reconnected) == doomed["runner"], (reconnected, by_replica)
    outages = [client.outages[0] for client in affected]
    recovered = [outage.resumed_at - killed_at for outage in outages if outage.resumed_at]
    assert len(recovered) == len(affected), "a client never got a new event after the kill"
    hellos = [outage.hello_at - killed_at for outage in outages if outage.hello_at]
    print(
        f"\nfailover: SIGKILL of one of {len(by_replica)} replicas with {doomed['client']} of "
        f"{len(clients)} clients and {doomed['runner']} of {len(task_ids)} runners (all running "
        f"{started:.1f} s after submission, finished {finished:.1f} s after the kill)\n"
        f"  kill -> first new event: {_spread(recovered)}\n"
        f"  kill -> hello from another replica: {_spread(hellos)}\n"
        f"  load average {_load()}"
    )
    assert _percentile(recovered, 0.99) < RECOVERY_P99_BOUND_S


def _spread(seconds: list[float]) -> str:
    return (
        f"p50 {_percentile(seconds, 0.5):.2f} s, p99 {_percentile(seconds, 0.99):.2f} s, "
        f"max {max(seconds):.2f} s, mean {statistics.fmean(seconds):.2f} s"
    )


# ---- a replica joins -------------------------------------------------------------------------


async def test_a_replica_started_while_others_run_joins_without_a_restart_of_anyone(
    cluster: ReplicaCluster,
) -> None:
    stored = StoredState(cluster.database_url)
    old = cluster.alive()
    pids = [replica.pid for replica in old]
    async with cluster.client() as http:
        session_ids = await _sessions(http, 3)
    old_watchers = await _watch(cluster.ws_url, session_ids, per_session=10)
    joined = await asyncio.to_thread(cluster.add_replica)
    await asyncio.to_thread(cluster.haproxy.wait_states, dict.fromkeys(cluster.names([joined]), "UP"))
    # leastconn: the newcomer has the fewest connections, so it gets the new ones.
    new_watchers = await _watch(cluster.ws_url, session_ids, per_session=2)
    assert (await cluster.connections(joined))["client"] == len(new_watchers)
    async with httpx.AsyncClient(base_url=joined.url, timeout=60) as http:
        task_ids = await _submit(http, session_ids, SHORT)  # stored by the newcomer itself
    try:
        await asyncio.to_thread(stored.wait_phases, task_ids, _final, 120, "finished")
        await _settle(old_watchers + new_watchers, stored)
    finally:
        await asyncio.gather(*(client.stop() for client in old_watchers + new_watchers))

    _assert_tasks_complete(stored, task_ids, SHORT)
    _assert_exactly_once(old_watchers + new_watchers, stored)
    assert [client for client in old_watchers if client.outages] == []
    assert [replica.pid for replica in old] == pids
    runners_on_joined = _runners_connected(joined, task_ids)
    print(
        f"\njoin: a replica started beside {len(old)} others took {len(new_watchers)} new clients "
        f"and {runners_on_joined} of {len(task_ids)} runners; load average {_load()}"
    )
    assert runners_on_joined >= 1


def _runners_connected(replica: GatewayProcess, task_ids: list[str]) -> int:
    lines = [line for line in replica.log_path.read_text().splitlines() if '"runner.connected"' in line]
    return sum(any(task_id in line for line in lines) for task_id in task_ids)


# ---- the database restarts --------------------------------------------------------------------


async def _readiness(replicas: list[GatewayProcess]) -> list[int]:
    async with httpx.AsyncClient(timeout=5) as http:

        async def one(replica: GatewayProcess) -> int:
            try:
                return (await http.get(f"{replica.url}/readyz")).status_code
            except httpx.HTTPError:
                return 0  # no answer in time: not ready either, but not what is asked for

        return list(await asyncio.gather(*(one(replica) for replica in replicas)))


async def _wait_readiness(replicas: list[GatewayProcess], status: int, timeout_s: float) -> float:
    started = time.monotonic()
    while (statuses := await _readiness(replicas)) != [status] * len(replicas):
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"/readyz answered {statuses}, not {status} everywhere")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_postgres_restart_mid_run_is_ridden_out_with_readyz_false_meanwhile(
    cluster: ReplicaCluster, pg: PgServer
) -> None:
    stored = StoredState(cluster.database_url)
    alive = cluster.alive()
    pids = [replica.pid for replica in alive]
    async with cluster.client() as http:
        session_ids = await _sessions(http, 6)
        clients = await _watch(cluster.ws_url, session_ids, per_session=5)
        task_ids = await _submit(http, session_ids)
    servers = dict.fromkeys(cluster.names(alive), "DOWN")
    try:
        await asyncio.to_thread(stored.wait_phases, task_ids, _running, 90, "running")
        await asyncio.sleep(1.0)  # events flowing
        await asyncio.to_thread(pg.stop)
        unready = await _wait_readiness(alive, 503, 20)
        await asyncio.to_thread(cluster.haproxy.wait_states, servers, 20)
        await asyncio.sleep(1.0)  # the runners keep writing into the outage
        await asyncio.to_thread(pg.start)
        ready = await _wait_readiness(alive, 200, 30)
        await asyncio.to_thread(cluster.haproxy.wait_states, dict.fromkeys(servers, "UP"), 20)
        await asyncio.to_thread(stored.wait_phases, task_ids, _final, 120, "finished")
        await _settle(clients, stored)
    finally:
        await asyncio.gather(*(client.stop() for client in clients))

    assert [replica.pid for replica in cluster.alive()] == pids  # rode it out: none restarted
    _assert_tasks_complete(stored, task_ids)
    _assert_exactly_once(clients, stored)
    print(
        f"\npostgres restart: every replica's /readyz false {unready:.2f} s after the stop, true again "
        f"{ready:.2f} s after the start; {sum(len(c.outages) for c in clients)} client reconnects; "
        f"load average {_load()}"
    )
