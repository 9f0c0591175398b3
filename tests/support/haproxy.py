"""HAProxy (Debian's package) in front of gateway replicas, for failover tests.

No sticky sessions: ``leastconn`` sends each new connection, WebSocket or
not, to the replica with the fewest, so a client or runner that reconnects
lands wherever the balancer likes. Each replica is health-checked on
``/readyz`` every half second; a connection that fails on a replica not yet
marked down is retried on another (``retries`` with ``redispatch``), which is
what a client dropped by a dying replica meets. Servers are named ``gN`` and
may be declared before their replica exists: they are down until it answers.
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .gateway import free_port

__all__ = ["Haproxy"]

_CONFIG = """\
global
    maxconn 4000
    stats socket {socket} mode 600 level admin
defaults
    mode http
    # Also the pause before a retry (HAProxy waits min(this, 1 s)): a dead
    # replica refuses at once, and its clients should not wait a second more.
    timeout connect 500ms
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-request 10s
    timeout queue 10s
    # A check waits this long for /readyz: under load a replica's event loop
    # may answer late, which is not the same as being down.
    timeout check 3s
    retries 3
    option redispatch 1
frontend gateways
    bind 127.0.0.1:{port}
    default_backend gateways
backend gateways
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fastinter 250ms downinter 500ms rise 2 fall 3
{servers}
"""


class Haproxy:
    def __init__(self, root: Path, backends: list[int]) -> None:
        """``backends``: the replicas' loopback ports, named g0, g1, … in order."""
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise RuntimeError("haproxy is not installed (bash scripts/setup.sh test)")
        self.binary = binary
        self.port = free_port()
        self.root = root
        self.socket_path = root / "haproxy.sock"
        self.config = root / "haproxy.cfg"
        self.log_path = root / "haproxy.log"
        servers = "\n".join(f"    server g{n} 127.0.0.1:{port}" for n, port in enumerate(backends))
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(_CONFIG.format(socket=self.socket_path, port=self.port, servers=servers))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> Haproxy:
        subprocess.run([self.binary, "-c", "-q", "-f", str(self.config)], check=True, timeout=30)
        with self.log_path.open("ab") as log:
            # -db: stay in the foreground, so this process is the one to stop.
            self.process = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while not self.socket_path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def _command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(str(self.socket_path))
            conn.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self) -> dict[str, str]:
        """Each server's health as HAProxy sees it: ``UP``, ``DOWN``, ``UP 1/2``, …"""
        text = self._command("show stat").lstrip("# ")
        return {
            row["svname"]: row["status"]
            for row in csv.DictReader(text.splitlines())
            if row["pxname"] == "gateways" and row["svname"] not in {"FRONTEND", "BACKEND"}
        }

    def wait_states(self, wanted: dict[str, str], timeout_s: float = 30.0) -> float:
        """Wait until the named servers are in the wanted states; the seconds it took."""
        started = time.monotonic()
        while True:
            states = self.states()
            if all(states.get(name) == state for name, state in wanted.items()):
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"haproxy servers are {states}, not {wanted}")
            time.sleep(0.1)
