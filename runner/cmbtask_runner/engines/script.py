"""The ``script`` engine: a user's Python code, Python file or command.

It runs as a child process in the task's work directory. The child inherits
the runner's captured fd 1/2, so its stdout and stderr stream as ``output``
events per stream with no extra plumbing; through :mod:`cmbtask_runner.sdk`
it can emit events, ask for approvals and input, and load/save state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar

import psutil
from cmbtask_protocol import ENV_SESSION_ID, ENV_TASK_ID, ENV_TASK_TOKEN, ENV_WORK_DIR, ScriptParams, TaskSpec

from ..oom import oom_kills
from ..sdk import SOCKET_ENV
from ..sdk_serving import SdkServer
from . import parse_params
from .base import EngineContext, EngineError, TaskCancelled

__all__ = ["ScriptEngine"]

#: the directory holding the ``cmbtask_runner`` package (for the script's PYTHONPATH)
_SDK_ROOT = str(Path(__file__).resolve().parents[2])
#: how long a script gets between SIGTERM and SIGKILL when the task is cancelled
STOP_GRACE_S = 3.0
_POLL_S = 0.1


class ScriptEngine:
    name: ClassVar[str] = "script"

    def validate(self, task: TaskSpec) -> None:
        parse_params(ScriptParams, task.params)

    def run(self, ctx: EngineContext) -> dict[str, Any] | None:
        params = parse_params(ScriptParams, ctx.task.params)
        argv = _argv(params, ctx.work_dir)
        oom_before = oom_kills()
        with SdkServer(ctx) as sdk:
            try:
                child = subprocess.Popen(
                    argv,
                    cwd=ctx.work_dir,
                    env=_env(params, ctx, str(sdk.path)),
                    stdin=subprocess.DEVNULL,
                )
            except FileNotFoundError:
                raise EngineError(f"command not found: {argv[0]}") from None
            except PermissionError:
                raise EngineError(f"command not executable: {argv[0]}") from None
            code = _wait(child, ctx, sdk)
        if sdk.failure is not None:
            raise EngineError(sdk.failure)
        if code == -signal.SIGKILL and oom_kills() > oom_before:
            raise EngineError("OOMKilled: the script went over the memory limit and the kernel killed it")
        if code < 0:
            raise EngineError(f"script killed by signal {_signal_name(-code)}")
        if code != 0:
            raise EngineError(f"script exited with code {code}")
        return {"exit_code": 0}


def _argv(params: ScriptParams, work_dir: Path) -> list[str]:
    if params.command:
        return list(params.command)
    if params.code is not None:
        source = work_dir / "script.py"
        source.write_text(params.code, encoding="utf-8")
        return [sys.executable, str(source)]
    assert params.path is not None
    path = (work_dir / params.path).resolve()
    if not path.is_file():
        raise EngineError(f"script not found: {params.path}")
    return [sys.executable, str(path)]


def _env(params: ScriptParams, ctx: EngineContext, socket_path: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != ENV_TASK_TOKEN}
    env.update(params.env)
    env.update(
        {
            SOCKET_ENV: socket_path,
            ENV_TASK_ID: ctx.task.id,
            ENV_SESSION_ID: ctx.task.session_id,
            ENV_WORK_DIR: str(ctx.work_dir),
            "PYTHONUNBUFFERED": "1",  # output as it happens, not in 8 KB lumps
            # The SDK needs only the standard library: make it importable from any
            # Python a command may run, not just the runner's own interpreter.
            "PYTHONPATH": os.pathsep.join(filter(None, [_SDK_ROOT, env.get("PYTHONPATH", "")])),
        }
    )
    return env


def _wait(child: subprocess.Popen[bytes], ctx: EngineContext, sdk: SdkServer) -> int:
    """Wait for the script; stop it on cancel or when the SDK says the task must fail."""
    while True:
        try:
            return child.wait(timeout=_POLL_S)
        except subprocess.TimeoutExpired:
            pass
        if ctx.cancelled.is_set():
            _stop(child)
            raise TaskCancelled("cancelled")
        if sdk.abort.is_set():
            _stop(child)
            return child.returncode


def _stop(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM the script and whatever it started, SIGKILL what is left after a grace."""
    try:
        family = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for proc in family:
        with suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(family, timeout=STOP_GRACE_S)
    for proc in alive:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    child.wait(timeout=STOP_GRACE_S)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
