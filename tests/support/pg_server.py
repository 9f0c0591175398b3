"""A PostgreSQL server of a test's own, which the test may stop and restart.

The suite's shared server (``scripts/postgres.sh``, port 55432) serves every
test at once, so no test may take it down. A test of what the gateway does
while the database is away starts this one instead: Debian's binaries,
``initdb`` into a temporary directory, a free loopback port, TCP only. As
root the server runs as the ``postgres`` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2

from .gateway import free_port

__all__ = ["PgServer"]


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql (bash scripts/postgres.sh)")
    return found[-1].parent


class PgServer:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        # Not under pytest's 0700 tmp dirs: the postgres user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="cmbtask-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str, timeout_s: float = 60.0) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout_s)

    def init(self) -> PgServer:
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c max_connections=300 -c fsync=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-o", options, "start")

    def stop(self) -> None:
        """A fast shutdown: every session is ended, as in a failover or an upgrade."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout_s=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self) -> str:
        """A new database; its SQLAlchemy URL."""
        name = f"failover_{uuid.uuid4().hex[:10]}"
        admin = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            admin.close()
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def answers(self) -> bool:
        try:
            psycopg2.connect(
                host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=2
            ).close()
        except psycopg2.OperationalError:
            return False
        return True

    def wait_answering(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL did not answer within {timeout_s} s")
            time.sleep(0.1)
