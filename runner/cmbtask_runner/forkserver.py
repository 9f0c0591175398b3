"""A warm parent for runner processes: import the runner once, fork per task.

Starting Python and importing pydantic, the protocol models, websockets and
structlog costs a few hundred milliseconds of CPU per runner; fifty tasks
submitted at once on a small machine would wait seconds for their first
event. The local executor therefore keeps one of these servers: it imports
everything a runner needs, then waits on a Unix socket and forks one child
per task. The child becomes an ordinary runner — its own session, work
directory, environment, stdout/stderr file — that has never shared a single
object with another task (the server itself never runs task code).

Protocol: one JSON line per connection, ``{"op": "spawn_many", "spawns":
[{"env": {...}, "cwd": "...", "out": "..."}, …]}`` → ``{"results": [{"pid": N}
or {"error": "…"}, …]}`` (a wave of tasks in one round trip), or
``{"op": "ping"}`` → ``{"pong": true}``. The server exits when its parent (the gateway) goes away,
on SIGTERM, or on ``{"op": "exit"}``; runners it forked keep running.

    python -m cmbtask_runner.forkserver SOCKET_PATH
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
from importlib.metadata import entry_points
from typing import Any

from . import running  # noqa: F401 - imported here so that every child starts warm
from .__main__ import main as runner_main
from .engines import demo, script  # noqa: F401 - the built-in engines, warm as well

__all__ = ["serve"]

_MAX_REQUEST = 1024 * 1024
_TICK_S = 0.2


def serve(socket_path: str) -> int:
    entry_points(group="cmbtask.engines")  # fills importlib's metadata cache before forking
    parent = os.getppid()
    if os.path.exists(socket_path):
        os.unlink(socket_path)  # a stale socket of a server that died
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(socket_path)
        os.chmod(socket_path, 0o600)
        server.listen(128)
        _loop(server, parent)
    finally:
        server.close()
        if os.path.exists(socket_path):
            os.unlink(socket_path)
    return 0


def _loop(server: socket.socket, parent: int) -> None:
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    # A server whose gateway died serves nobody: the next gateway starts its own.
    while not stopping and os.getppid() == parent:
        for _ in selector.select(_TICK_S):
            conn, _ = server.accept()
            with conn:
                if _handle(conn, server) == "exit":
                    stopping.append(True)
        _reap()
    selector.close()


def _handle(conn: socket.socket, server: socket.socket) -> str:
    conn.settimeout(10)
    try:
        request = json.loads(conn.makefile("rb").readline(_MAX_REQUEST))
        op = request.get("op")
        if op == "spawn_many":
            spawns = request["spawns"]
            reply: dict[str, Any] = {"results": [_spawn_one(item, server, conn) for item in spawns]}
        elif op == "ping":
            reply = {"pong": True, "pid": os.getpid()}
        elif op == "exit":
            reply = {"bye": True}
        else:
            reply = {"error": f"unknown op {op!r}"}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        op, reply = "error", {"error": f"{type(exc).__name__}: {exc}"}
    # The gateway may have gone away mid-request; the child (if any) runs regardless.
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(reply).encode() + b"\n")
    return str(op)


def _spawn_one(request: dict[str, Any], server: socket.socket, conn: socket.socket) -> dict[str, Any]:
    """One spawn of a ``spawn_many``: its failure is its own, not the others'."""
    try:
        return {"pid": _spawn(request, server, conn)}
    except (OSError, KeyError, TypeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _spawn(request: dict[str, Any], server: socket.socket, conn: socket.socket) -> int:
    env = {str(key): str(value) for key, value in dict(request["env"]).items()}
    cwd, out = str(request["cwd"]), str(request["out"])
    # A SIGTERM that reaches the child before it resets this server's handler
    # would be swallowed by that handler: hold it back until the reset is done.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        return pid
    # The child: from here on it is a runner and nothing else.
    code = 70
    try:
        server.close()
        conn.close()
        _become_runner(env, cwd, out)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        code = runner_main([])
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _become_runner(env: dict[str, str], cwd: str, out: str) -> None:
    os.setsid()  # its own session: signalled as a group, survives this server and the gateway
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)


def _reap() -> None:
    """Collect exited children so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m cmbtask_runner.forkserver SOCKET_PATH\n")
        raise SystemExit(64)
    raise SystemExit(serve(sys.argv[1]))
