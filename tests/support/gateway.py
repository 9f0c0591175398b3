"""A real gateway process for tests: start, kill -9, restart on the same data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["GatewayProcess", "free_port"]

TEST_SECRET = "test-secret-key-for-runner-tokens"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayProcess:
    def __init__(
        self,
        data_dir: Path,
        database_url: str,
        *,
        host: str = "127.0.0.1",
        component: bool = False,
        port: int | None = None,
        **env: str,
    ) -> None:
        """``component``: run ``cmbtask gateway``, configured by environment only
        (as a container is), instead of ``cmbtask up`` with flags."""
        self.data_dir = data_dir
        self.component = component
        self.database_url = database_url
        #: 127.0.0.1, or the Kubernetes node's bridge address for gateways that pods dial
        self.host = host
        self.port = port or free_port()
        self.env = {
            "CMBTASK_EXECUTOR": "none",
            "CMBTASK_SECRET_KEY": TEST_SECRET,
            "CMBTASK_LOG_FORMAT": "json",
            "CMBTASK_HEARTBEAT_S": "2",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "gateway.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> GatewayProcess:
        self.spawn()
        return self.wait_ready(timeout_s)

    def spawn(self) -> None:
        """Start the process without waiting for it (``wait_ready``)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "CMBTASK_DATABASE_URL": self.database_url}
        where = ["--host", self.host, "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.component:
            env.update(
                CMBTASK_HOST=self.host, CMBTASK_PORT=str(self.port), CMBTASK_DATA_DIR=str(self.data_dir)
            )
            where = []
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cmbtask_gateway.cli", "gateway" if self.component else "up", *where],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float = 30.0) -> GatewayProcess:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway did not become ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, exactly like a crash."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def restart(self) -> GatewayProcess:
        self.kill()
        return self.start()

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def create_token(self, user: str) -> str:
        env = {**os.environ, **self.env, "CMBTASK_DATABASE_URL": self.database_url}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "cmbtask_gateway.cli",
                "token",
                "create",
                user,
                "--data-dir",
                str(self.data_dir),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()
