"""Gateway replicas on one PostgreSQL database behind HAProxy, as deployed.

Each replica is a ``cmbtask gateway`` process configured by ``CMBTASK_*``
environment only, with the local executor and a data directory of its own
(its fork server and task directories); all share the runner-token key and
name the balancer as the URL their runners dial back to, so a runner whose
replica dies reconnects through the balancer to another. The schema is
migrated once before any replica starts, as the chart's init container does.
Spare balancer slots let a replica join later without touching the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from .gateway import GatewayProcess, free_port
from .haproxy import Haproxy
from .pg_server import PgServer

__all__ = ["ReplicaCluster", "migrate"]

_UNLIMITED = {
    "CMBTASK_MAX_CONCURRENT_TASKS_PER_USER": "0",
    "CMBTASK_MAX_TASK_SUBMISSIONS_PER_MINUTE": "0",
    "CMBTASK_MAX_SOCKETS_PER_USER": "0",
    "CMBTASK_MAX_CONCURRENT_TASKS": "64",
}


class ReplicaCluster:
    def __init__(self, root: Path, pg: PgServer, replicas: int = 3, spares: int = 1) -> None:
        self.root = root
        self.pg = pg
        self.database_url = pg.create_database()
        self.ports = [free_port() for _ in range(replicas + spares)]
        self.haproxy = Haproxy(root / "haproxy", self.ports)
        self.replicas = [self._replica(n) for n in range(replicas)]

    def _replica(self, n: int) -> GatewayProcess:
        return GatewayProcess(
            self.root / f"g{n}",
            self.database_url,
            component=True,
            port=self.ports[n],
            CMBTASK_EXECUTOR="local",
            CMBTASK_PUBLIC_URL=self.haproxy.url,
            CMBTASK_AUTO_MIGRATE="false",
            **_UNLIMITED,
        )

    @property
    def url(self) -> str:
        return self.haproxy.url

    @property
    def ws_url(self) -> str:
        return self.haproxy.ws_url

    def start(self) -> ReplicaCluster:
        migrate(self.database_url)
        self.haproxy.start()
        for replica in self.replicas:
            replica.spawn()  # side by side: each takes seconds to import and start
        for replica in self.replicas:
            replica.wait_ready(60)
        self.haproxy.wait_states(self._all_up())
        return self

    def _all_up(self) -> dict[str, str]:
        return dict.fromkeys(self.names(self.replicas), "UP")

    def alive(self) -> list[GatewayProcess]:
        return [gw for gw in self.replicas if gw.process is not None and gw.process.poll() is None]

    def names(self, replicas: list[GatewayProcess]) -> list[str]:
        """The balancer's names of these replicas."""
        return [f"g{self.ports.index(gw.port)}" for gw in replicas]

    def add_replica(self) -> GatewayProcess:
        """Start the next replica in a spare slot (the balancer already names it)."""
        if len(self.replicas) == len(self.ports):
            raise RuntimeError("no spare balancer slot left")
        replica = self._replica(len(self.replicas))
        self.replicas.append(replica)
        return replica.start(60)

    def client(self) -> httpx.AsyncClient:
        """An HTTP client of the balancer."""
        return httpx.AsyncClient(base_url=self.url, timeout=60)

    async def connections(self, replica: GatewayProcess) -> dict[str, int]:
        """Open sockets on one replica, by kind (``runner``, ``client``), from its metrics."""
        async with httpx.AsyncClient(timeout=30) as http:
            text = (await http.get(f"{replica.url}/metrics")).text
        found = re.findall(r'^cmbtask_ws_connections\{kind="(\w+)"\} ([0-9.]+)$', text, re.MULTILINE)
        return {kind: int(float(value)) for kind, value in found}

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        self.haproxy.stop()
        self._kill_leftover_runners()

    def _kill_leftover_runners(self) -> None:
        """Runners outlive their gateway by design; a failed test must not leave
        them knocking at a balancer that is gone."""
        for launch in self.root.glob("g*/tasks/*/launch.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):
                pid, ctime = json.loads(launch.read_text())["handle"].split(":")
                if abs(psutil.Process(int(pid)).create_time() - float(ctime)) < 0.05:
                    os.killpg(int(pid), signal.SIGKILL)


def migrate(database_url: str) -> None:
    """``cmbtask db upgrade``, once, before any replica starts (as the chart does)."""
    env = {**os.environ, "CMBTASK_DATABASE_URL": database_url}
    subprocess.run(
        [sys.executable, "-m", "cmbtask_gateway.cli", "db", "upgrade"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
