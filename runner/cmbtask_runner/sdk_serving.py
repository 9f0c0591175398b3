"""The runner's end of :mod:`cmbtask_runner.sdk`: a Unix socket server.

A script task is a child process, so its calls (emit, approvals, state) come
over a Unix socket in a private temporary directory and are answered by
calling the engine context, one thread per connection: an approval may block
for hours while the script's other threads keep emitting.
"""

from __future__ import annotations

import json
import shutil
import socketserver
import tempfile
import threading
from pathlib import Path
from typing import Any

import structlog
from cmbtask_protocol import Decision, OnTimeout
from pydantic import ValidationError

from .engines.base import EngineContext, EngineError, TaskCancelled

__all__ = ["SdkServer"]

log = structlog.get_logger("cmbtask_runner.sdk")
_MAX_REQUEST = 8 * 1024 * 1024


class SdkServer:
    """Serves one task's script; ``failure`` is set when the task must fail
    (an approval expired under the ``fail`` policy), ``abort`` when it must stop."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.failure: str | None = None
        self.abort = threading.Event()
        self._dir = _socket_dir(ctx.work_dir)
        self.path = self._dir / "sdk.sock"
        self._server = _Server(str(self.path), _Handler)
        self._server.sdk = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.2,), daemon=True)

    def __enter__(self) -> SdkServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        try:
            return {"ok": True, **self._dispatch(op, request)}
        except TaskCancelled as exc:
            return {"ok": False, "error": f"task cancelled: {exc}"}
        except EngineError as exc:
            self.failure = str(exc)
            self.abort.set()
            return {"ok": False, "error": str(exc)}
        except (ValidationError, ValueError, TypeError, KeyError) as exc:
            return {"ok": False, "error": f"bad {op} call: {exc}"}

    def _dispatch(self, op: Any, request: dict[str, Any]) -> dict[str, Any]:
        ctx = self.ctx
        if op == "emit":
            ctx.emit(str(request["event_type"]), dict(request.get("data") or {}))
            return {}
        if op == "approval":
            return {"outcome": self._approval(request)}
        if op == "load_state":
            return {"state": ctx.load_state()}
        if op == "save_state":
            return {"version": ctx.save_state(dict(request["state"]), str(request.get("checkpoint", "")))}
        raise ValueError(f"unknown op {op!r}")

    def _approval(self, request: dict[str, Any]) -> dict[str, Any]:
        on_timeout = request.get("on_timeout")
        outcome = self.ctx.request_approval(
            str(request["prompt"]),
            kind=str(request.get("kind") or "approval"),
            options=[Decision(option) for option in request.get("options") or ("approve", "reject")],
            allow_text=bool(request.get("allow_text")),
            context=dict(request.get("context") or {}),
            timeout_s=request.get("timeout_s"),
            on_timeout=OnTimeout(on_timeout) if on_timeout else None,
        )
        return {
            "status": outcome.status.value,
            "approved": outcome.approved,
            "decision": outcome.decision.value if outcome.decision else None,
            "text": outcome.text,
            "resolved_by": outcome.resolved_by,
            "on_timeout": outcome.on_timeout.value if outcome.on_timeout else None,
        }


def _socket_dir(work_dir: Path) -> Path:
    """A private directory for the socket: in the work directory (writable even in
    a pod with a read-only root), unless that path is too long for a Unix socket
    (~107 bytes), then a fresh one under the temporary directory."""
    inside = work_dir / ".sdk"
    if len(str(inside / "sdk.sock")) < 100:
        inside.mkdir(mode=0o700, exist_ok=True)
        return inside
    return Path(tempfile.mkdtemp(prefix="cmbtask-sdk-"))


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    sdk: SdkServer


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(_MAX_REQUEST)
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as exc:
            reply: dict[str, Any] = {"ok": False, "error": f"malformed request: {exc}"}
        else:
            reply = self.server.sdk.handle(request)
        self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")
