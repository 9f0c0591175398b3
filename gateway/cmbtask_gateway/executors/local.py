"""The ``local`` executor: one detached runner process per task on this machine.

Each runner gets its own work directory ``<data_dir>/tasks/<task_id>/`` and
its own session (``start_new_session``), so a gateway restart — or a Ctrl-C
in the gateway's terminal — does not take running tasks down. The handle is
``"<pid>:<create time>"``: a pid alone could be reused by an unrelated process
after a reboot or a long uptime; the pair never is.

With the standard runner command the runners are forked from a warm fork
server (``cmbtask_runner.forkserver``), which saves each task the
interpreter start and imports — most of its time to first event when many
tasks start at once. Each runner is still a process of its own that never
ran another task's code.

Exit codes come from this gateway's own children when it started them, or
from the ``exit.json`` a runner writes at exit otherwise (forked runners, or
runners a previous gateway started). The concurrency limit and the queue
belong to the dispatcher, not here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import structlog
from cmbtask_protocol import (
    ENV_GATEWAY_URL,
    ENV_SESSION_ID,
    ENV_TASK_ID,
    ENV_TASK_TOKEN,
    ENV_TRACEPARENT,
    ENV_WORK_DIR,
    EXIT_FILE,
    RunnerExit,
    runner_died,
)

from ..coalescing import Coalescing
from .base import ExecutorError, ExecutorStatus, LaunchRequest, without_provider_keys

__all__ = ["LocalExecutor"]

log = structlog.get_logger("cmbtask_gateway.executors.local")

#: written here at launch, so that a later gateway can map a handle to its task
LAUNCH_FILE = "launch.json"
#: the runner's stdout/stderr (its own logs; task output travels as events)
RUNNER_OUT = "runner.out"
#: create times are compared with this tolerance (psutil derives them from clock ticks)
_CTIME_TOLERANCE_S = 0.05
_REAP_EVERY_S = 0.5


class LocalExecutor:
    name: str = "local"

    def __init__(
        self,
        data_dir: Path,
        runner_command: Sequence[str],
        extra_env: Mapping[str, str] | None = None,
        *,
        prefork: bool | None = None,
        provider_keys_fallback: bool = False,
    ) -> None:
        """``prefork``: fork runners from a warm server (None: whenever the command
        is the standard ``PYTHON -m cmbtask_runner``, which the server runs too)."""
        if not runner_command:
            raise ValueError("runner_command must not be empty")
        self.data_dir = Path(data_dir)
        self.tasks_dir = self.data_dir / "tasks"
        self.runner_command = list(runner_command)
        self.extra_env = dict(extra_env or {})
        self.provider_keys_fallback = provider_keys_fallback
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # handle → our own child
        self._exit_codes: dict[str, int] = {}
        self._work_dirs: dict[str, Path] = {}  # handle → work dir
        self._reaper: asyncio.Task[None] | None = None
        standard = _is_standard_runner(self.runner_command)
        self.prefork = standard if prefork is None else prefork and standard
        self._forkserver: _ForkServer | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="local-executor-reaper")
        if self.prefork and self._forkserver is None:
            await self._start_forkserver()

    async def close(self) -> None:
        """Stop reaping and the fork server; the runners keep running (they outlive the gateway)."""
        if self._reaper is not None:
            self._reaper.cancel()
            with suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        if self._forkserver is not None:
            await asyncio.to_thread(self._forkserver.stop)
            self._forkserver = None

    async def _start_forkserver(self) -> None:
        env = self._base_env()
        try:
            self._forkserver = await asyncio.to_thread(
                _ForkServer.start, self.runner_command[0], env, self.data_dir
            )
        except (OSError, ExecutorError) as exc:
            # Slower, not broken: every runner then starts as a fresh interpreter.
            log.warning("forkserver.unavailable", error=str(exc))

    # ---- the Executor interface -------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> str:
        work_dir = self.tasks_dir / request.task_id
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / EXIT_FILE).unlink(missing_ok=True)  # a relaunch must not read an old exit
        try:
            pid = await self._start_runner(request, work_dir)
            handle = f"{pid}:{psutil.Process(pid).create_time():.2f}"
        except (OSError, psutil.Error) as exc:
            raise ExecutorError(f"could not start the runner: {exc}") from exc
        self._work_dirs[handle] = work_dir
        launch = {"task_id": request.task_id, "handle": handle, "time": time.time()}
        (work_dir / LAUNCH_FILE).write_text(json.dumps(launch), encoding="utf-8")
        log.info("runner.launched", task_id=request.task_id, session_id=request.session_id, handle=handle)
        return handle

    async def cancel(self, handle: str, *, grace_s: float) -> None:
        proc = self._live_process(handle)
        if proc is None:
            return
        log.info("runner.terminate", handle=handle, grace_s=grace_s)
        self._signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, grace_s)
        while time.monotonic() < deadline:
            if not self._is_alive(handle):
                return
            await asyncio.sleep(0.05)
        if self._is_alive(handle):
            log.warning("runner.kill", handle=handle)
            self._signal_group(proc.pid, signal.SIGKILL)
            await self._await_gone(handle, timeout_s=5.0)

    async def inspect(self, handle: str) -> ExecutorStatus:
        self._poll(handle)
        if self._is_alive(handle):
            return ExecutorStatus(handle=handle, alive=True)
        # A runner killed on its own (OOM killer, kill -9) may leave children in its
        # group, such as a script: they go too.
        if _group_is_the_runners(handle):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(_parse(handle)[0], signal.SIGKILL)
        return self._ended(handle)

    async def adopt(self, handles: Sequence[str]) -> list[ExecutorStatus]:
        self._index_work_dirs()
        statuses = [await self.inspect(handle) for handle in handles]
        alive = sum(status.alive for status in statuses)
        log.info("runner.adopted", handles=len(handles), alive=alive)
        return statuses

    # ---- launching ----------------------------------------------------------------------------

    async def _start_runner(self, request: LaunchRequest, work_dir: Path) -> int:
        """The new runner's pid: forked by the warm server if there is one."""
        server = self._forkserver
        if server is not None:
            spawn = Spawn(self._env(request, work_dir), str(work_dir), str(work_dir / RUNNER_OUT))
            try:
                return await server.spawn(spawn)
            except (OSError, ValueError, ExecutorError) as exc:
                log.warning("forkserver.failed", task_id=request.task_id, error=str(exc))
                self._forkserver = None
                await asyncio.to_thread(server.stop)
        child = await asyncio.to_thread(self._spawn, request, work_dir)
        self._children[f"{child.pid}:{psutil.Process(child.pid).create_time():.2f}"] = child
        return child.pid

    def _spawn(self, request: LaunchRequest, work_dir: Path) -> subprocess.Popen[bytes]:
        with (work_dir / RUNNER_OUT).open("ab") as out:
            return subprocess.Popen(
                self.runner_command,
                cwd=work_dir,
                env=self._env(request, work_dir),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the gateway; a group to signal as one
                close_fds=True,
            )

    def _base_env(self) -> dict[str, str]:
        # The gateway's own settings (database URL, secrets) are not the runner's business.
        env = {key: value for key, value in os.environ.items() if not key.startswith("CMBTASK_")}
        env.update(self.extra_env)
        return env if self.provider_keys_fallback else without_provider_keys(env)

    def _env(self, request: LaunchRequest, work_dir: Path) -> dict[str, str]:
        env = self._base_env()
        env.update(
            {
                ENV_TASK_ID: request.task_id,
                ENV_SESSION_ID: request.session_id,
                ENV_GATEWAY_URL: request.gateway_url,
                ENV_TASK_TOKEN: request.token,
                ENV_WORK_DIR: str(work_dir),
                **request.provider_env,
            }
        )
        # The launch's own context, never one the gateway process inherited.
        env.pop(ENV_TRACEPARENT, None)
        if request.trace_parent:
            env[ENV_TRACEPARENT] = request.trace_parent
        return env

    # ---- liveness -----------------------------------------------------------------------------

    def _live_process(self, handle: str) -> psutil.Process | None:
        """The runner behind ``handle`` if it is still running (and is the same process)."""
        pid, ctime = _parse(handle)
        child = self._children.get(handle)
        if child is not None and child.poll() is not None:
            self._record_exit(handle, child)
            return None
        try:
            proc = psutil.Process(pid)
            same = abs(proc.create_time() - ctime) <= _CTIME_TOLERANCE_S
            if not same or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    def _is_alive(self, handle: str) -> bool:
        return self._live_process(handle) is not None

    def _poll(self, handle: str) -> None:
        child = self._children.get(handle)
        if child is not None and child.poll() is not None:
            self._record_exit(handle, child)

    def _record_exit(self, handle: str, child: subprocess.Popen[bytes]) -> None:
        if child.returncode is not None:
            self._exit_codes[handle] = child.returncode
            self._children.pop(handle, None)

    async def _await_gone(self, handle: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._is_alive(handle):
                return
            await asyncio.sleep(0.05)

    async def _reap_forever(self) -> None:
        """Collect our children's exit codes promptly, so none lingers as a zombie."""
        while True:
            for handle, child in list(self._children.items()):
                if child.poll() is not None:
                    self._record_exit(handle, child)
            await asyncio.sleep(_REAP_EVERY_S)

    # ---- how it ended ----------------------------------------------------------------------------

    def _ended(self, handle: str) -> ExecutorStatus:
        # Our own child may have exited after the last poll but before the
        # liveness check saw it gone: collect its exit code now.
        self._poll(handle)
        code = self._exit_codes.get(handle)
        record = self._exit_record(handle)
        if code is None and record is not None:
            code = int(record["exit_code"])
        if code is None:
            reason = "runner exited without a final event (killed?)"
        elif code < 0:
            reason = f"runner killed by signal {_signal_name(-code)}"
        else:
            meaning = RunnerExit(code).meaning if code in set(RunnerExit) else "exited abnormally"
            reason = f"runner {meaning} (exit code {code})"
            if record is not None and record.get("reason"):
                reason += f": {record['reason']}"
        died = runner_died(code)
        return ExecutorStatus(handle=handle, alive=False, exit_code=code, reason=reason, died=died)

    def _exit_record(self, handle: str) -> dict[str, Any] | None:
        work_dir = self._work_dir(handle)
        if work_dir is None:
            return None
        try:
            record = json.loads((work_dir / EXIT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        # No stale file can be here: launch removes the previous run's exit file.
        return record if isinstance(record, dict) and "exit_code" in record else None

    def _work_dir(self, handle: str) -> Path | None:
        if handle not in self._work_dirs:
            self._index_work_dirs()
        return self._work_dirs.get(handle)

    def _index_work_dirs(self) -> None:
        """Map handles to work directories from the launch files (after a restart)."""
        if not self.tasks_dir.is_dir():
            return
        for launch_file in self.tasks_dir.glob(f"*/{LAUNCH_FILE}"):
            try:
                handle = json.loads(launch_file.read_text(encoding="utf-8"))["handle"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            self._work_dirs.setdefault(str(handle), launch_file.parent)

    @staticmethod
    def _signal_group(pid: int, signum: signal.Signals) -> None:
        # The runner leads its own process group: signal it and whatever it started.
        # A runner forked a moment ago may not have its own group yet: signal it alone.
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        except PermissionError:
            pass


def _group_is_the_runners(handle: str) -> bool:
    """May the process group named by the handle's pid be signalled?

    The kernel never hands out a pid that is still a process group's id. So if
    no process has that pid, a group with that id can only be the runner's
    leftovers; if a different process has it (another create time), the pid was
    reused after the runner's whole group ended, and the group is someone else's.
    """
    pid, ctime = _parse(handle)
    try:
        process = psutil.Process(pid)
        created: float = process.create_time()
        return abs(created - ctime) < _CTIME_TOLERANCE_S  # the runner itself, as a zombie
    except psutil.NoSuchProcess:
        return True


def _parse(handle: str) -> tuple[int, float]:
    try:
        pid, ctime = handle.split(":", 1)
        return int(pid), float(ctime)
    except ValueError:
        raise ExecutorError(f"not a local runner handle: {handle!r}") from None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


@dataclass(frozen=True, slots=True)
class Spawn:
    """One runner for the fork server to fork: its environment, work directory and output file."""

    env: dict[str, str]
    cwd: str
    out: str


def _is_standard_runner(command: Sequence[str]) -> bool:
    return len(command) == 3 and command[1:] == ["-m", "cmbtask_runner"]


class _ForkServer:
    """The gateway's handle on ``python -m cmbtask_runner.forkserver``.

    Runners it forks are not this gateway's children: like runners adopted
    after a restart, their end is read from ``exit.json``. The server's pid is
    kept in ``forkserver.json`` so that a gateway restarted after a crash can
    stop the one its predecessor left behind.
    """

    STATE_FILE = "forkserver.json"
    START_TIMEOUT_S = 30.0

    def __init__(self, process: subprocess.Popen[bytes], socket_dir: Path) -> None:
        self.process = process
        self.socket_dir = socket_dir
        self.socket_path = socket_dir / "fork.sock"
        #: one runner forked, its pid: the spawns asked for while one is in
        #: flight go in one ``spawn_many`` round trip (a wave was 50 of them,
        #: queued on this server and on the thread pool)
        self.spawn: Coalescing[Spawn, int] = Coalescing(self._spawn_batch)

    @classmethod
    def start(cls, python: str, env: dict[str, str], data_dir: Path) -> _ForkServer:
        state = data_dir / cls.STATE_FILE
        cls._stop_stale(state)
        # A short private directory: Unix socket paths are limited to ~107 bytes.
        socket_dir = Path(tempfile.mkdtemp(prefix="cmbtask-fork-"))
        with (data_dir / "forkserver.out").open("ab") as out:
            process = subprocess.Popen(
                [python, "-m", "cmbtask_runner.forkserver", str(socket_dir / "fork.sock")],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        server = cls(process, socket_dir)
        server._await_ready()
        ctime = psutil.Process(process.pid).create_time()
        state.write_text(json.dumps({"pid": process.pid, "ctime": ctime}), encoding="utf-8")
        log.info("forkserver.started", pid=process.pid)
        return server

    def _await_ready(self) -> None:
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with suppress(OSError, ValueError, ExecutorError):
                if self._call({"op": "ping"}).get("pong"):
                    return
            time.sleep(0.05)
        self.stop()
        raise ExecutorError("the runner fork server did not start")

    async def _spawn_batch(self, spawns: list[Spawn]) -> list[int | Exception]:
        return [*await asyncio.to_thread(self.spawn_many, spawns)]

    def spawn_many(self, spawns: list[Spawn]) -> list[int | ExecutorError]:
        """Fork a runner per ``spawns`` item in one round trip: each a pid, or why not."""
        request = [{"env": s.env, "cwd": s.cwd, "out": s.out} for s in spawns]
        reply = self._call({"op": "spawn_many", "spawns": request})
        results = reply.get("results")
        if not isinstance(results, list) or len(results) != len(spawns):
            raise ExecutorError(f"the fork server refused: {reply.get('error', reply)}")
        return [
            int(r["pid"]) if "pid" in r else ExecutorError(f"the fork server refused: {r.get('error', r)}")
            for r in results
        ]

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(str(self.socket_path))
            conn.sendall(json.dumps(request).encode() + b"\n")
            reply: dict[str, Any] = json.loads(conn.makefile("rb").readline(1024 * 1024))
        return reply

    def stop(self) -> None:
        if self.process.poll() is None:
            with suppress(OSError, ValueError):
                self._call({"op": "exit"})
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    @staticmethod
    def _stop_stale(state: Path) -> None:
        try:
            record = json.loads(state.read_text(encoding="utf-8"))
            proc = psutil.Process(int(record["pid"]))
            if abs(proc.create_time() - float(record["ctime"])) <= _CTIME_TOLERANCE_S:
                proc.terminate()  # only the server: its runners are in sessions of their own
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return
