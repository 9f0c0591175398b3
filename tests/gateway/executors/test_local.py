"""The local executor with real child processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from cmbtask_gateway.executors.base import ExecutorError, LaunchRequest
from cmbtask_gateway.executors.local import LocalExecutor
from cmbtask_protocol import RunnerExit

from tests.runner.runner_fakegw import TOKEN, FakeGateway, wait_for

# Stands in for the runner: records its environment, starts a grandchild, and
# on SIGTERM writes the exit file the real runner writes, then exits 2.
FAKE_RUNNER = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    work = os.environ["CMBTASK_WORK_DIR"]
    env = {k: v for k, v in os.environ.items() if k.startswith(("CMBTASK_", "EXTRA_"))}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    with open(os.path.join(work, "env.json"), "w") as out:
        info = {"env": env, "cwd": os.getcwd(), "sid": os.getsid(0), "pid": os.getpid(), "child": child.pid}
        json.dump(info, out)
    def stop(*_):
        with open(os.path.join(work, "exit.json"), "w") as out:
            json.dump({"exit_code": 2, "final_event": "task.cancelled", "reason": "terminated"}, out)
        sys.exit(2)
    signal.signal(signal.SIGTERM, stop if os.environ.get("EXTRA_POLITE") else signal.SIG_IGN)
    mode = os.environ.get("EXTRA_MODE", "sleep")
    if mode == "exit3":
        sys.exit(3)
    time.sleep(300)
    """
)


def _request(task_id: str = "t1") -> LaunchRequest:
    return LaunchRequest(
        task_id=task_id,
        session_id="s1",
        owner="alice",
        engine="demo",
        mode="one-shot",
        gateway_url="http://127.0.0.1:9",
        token="secret-token",
    )


def _executor(tmp_path: Path, **env: str) -> LocalExecutor:
    return LocalExecutor(tmp_path / "data", [sys.executable, "-c", FAKE_RUNNER], extra_env=env)


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[LocalExecutor]:
    ex = _executor(tmp_path, EXTRA_POLITE="1")
    await ex.start()
    try:
        yield ex
    finally:
        await ex.close()
        for launch in (tmp_path / "data" / "tasks").glob("*/env.json"):
            info = json.loads(launch.read_text())
            for pid in (info["pid"], info["child"]):
                with_suppress_kill(pid)


def with_suppress_kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


async def _env_of(work_dir: Path) -> dict[str, object]:
    for _ in range(200):
        if (work_dir / "env.json").exists():
            try:
                info: dict[str, object] = json.loads((work_dir / "env.json").read_text())
                return info
            except ValueError:
                pass
        await asyncio.sleep(0.05)
    raise AssertionError("fake runner never started")


async def test_launch_gives_a_detached_process_with_the_contract_env(
    executor: LocalExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMBTASK_DATABASE_URL", "postgresql://secret")
    handle = await executor.launch(_request())
    pid, ctime = handle.split(":")
    assert psutil.Process(int(pid)).create_time() == pytest.approx(float(ctime), abs=0.05)
    work_dir = tmp_path / "data" / "tasks" / "t1"
    info = await _env_of(work_dir)
    env = info["env"]
    assert isinstance(env, dict)
    assert env["CMBTASK_TASK_ID"] == "t1" and env["CMBTASK_TASK_TOKEN"] == "secret-token"
    assert env["CMBTASK_GATEWAY_URL"] == "http://127.0.0.1:9" and env["CMBTASK_WORK_DIR"] == str(work_dir)
    assert env["EXTRA_POLITE"] == "1"
    assert "CMBTASK_DATABASE_URL" not in env, "gateway settings are not passed to runners"
    assert info["cwd"] == str(work_dir)
    assert info["sid"] == info["pid"] != os.getsid(0), "own session: survives the gateway"
    assert (await executor.inspect(handle)).alive


async def test_cancel_terminates_the_group_politely(executor: LocalExecutor, tmp_path: Path) -> None:
    handle = await executor.launch(_request())
    info = await _env_of(tmp_path / "data" / "tasks" / "t1")
    await executor.cancel(handle, grace_s=5)
    status = await executor.inspect(handle)
    assert not status.alive and status.exit_code == 2
    assert status.reason is not None and "cancelled" in status.reason
    assert not _running(int(str(info["child"]))), "the runner's children went with it"


async def test_cancel_kills_after_the_grace(tmp_path: Path) -> None:
    executor = _executor(tmp_path)  # ignores SIGTERM
    await executor.start()
    try:
        handle = await executor.launch(_request())
        await _env_of(tmp_path / "data" / "tasks" / "t1")
        await executor.cancel(handle, grace_s=0.5)
        status = await executor.inspect(handle)
        assert not status.alive and status.exit_code == -signal.SIGKILL
        assert status.reason == "runner killed by signal SIGKILL"
    finally:
        await executor.close()


async def test_exit_code_of_our_own_child(tmp_path: Path) -> None:
    executor = _executor(tmp_path, EXTRA_MODE="exit3")
    await executor.start()
    try:
        handle = await executor.launch(_request())
        for _ in range(100):
            status = await executor.inspect(handle)
            if not status.alive:
                break
            await asyncio.sleep(0.05)
        assert (
            not status.alive and status.exit_code == 3 and status.reason == "runner timed out (exit code 3)"
        )
    finally:
        await executor.close()


async def test_adopt_after_a_restart(executor: LocalExecutor, tmp_path: Path) -> None:
    alive = await executor.launch(_request("alive"))
    gone = await executor.launch(_request("gone"))
    killed = await executor.launch(_request("killed"))
    for task in ("alive", "gone", "killed"):
        await _env_of(tmp_path / "data" / "tasks" / task)
    await executor.close()
    successor = _executor(tmp_path)  # a new gateway: none of these are its children
    await successor.start()
    await executor.cancel(gone, grace_s=5)  # exits 2 and leaves an exit file
    os.kill(int(killed.split(":")[0]), signal.SIGKILL)  # no exit file
    await asyncio.sleep(0.3)
    statuses = {s.handle: s for s in await successor.adopt([alive, gone, killed])}
    assert statuses[alive].alive
    assert not statuses[gone].alive and statuses[gone].exit_code == 2
    assert statuses[gone].reason == "runner cancelled (exit code 2): terminated"
    assert not statuses[killed].alive and statuses[killed].exit_code is None
    assert statuses[killed].reason == "runner exited without a final event (killed?)"
    await successor.cancel(alive, grace_s=5)
    assert not (await successor.inspect(alive)).alive
    await successor.close()


async def test_a_reused_pid_is_not_the_runner(executor: LocalExecutor) -> None:
    handle = await executor.launch(_request())
    pid = handle.split(":")[0]
    impostor = f"{pid}:{float(handle.split(':')[1]) - 1000:.2f}"
    status = await executor.inspect(impostor)
    assert not status.alive
    await executor.cancel(impostor, grace_s=0.1)  # must not signal the real process
    assert (await executor.inspect(handle)).alive


async def test_launch_failure_is_an_executor_error(tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path / "data", ["/nonexistent/runner"])
    with pytest.raises(ExecutorError, match="could not start the runner"):
        await executor.launch(_request())


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_forked_runners_run_tasks_and_report(gw: FakeGateway, tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path / "data", [sys.executable, "-m", "cmbtask_runner"], extra_env=NO_PROXY)
    assert executor.prefork
    await executor.start()
    try:
        records = [
            gw.add_task("demo", {"steps": 2, "step_delay_s": 0.5, "checkpoint": False}) for _ in range(3)
        ]
        server = executor._forkserver
        assert server is not None
        batches: list[int] = []
        spawn_many = server.spawn_many
        server.spawn_many = lambda spawns: batches.append(len(spawns)) or spawn_many(spawns)  # type: ignore[method-assign]
        launches = [executor.launch(_gw_request(gw, record.spec.id)) for record in records]
        handles = list(await asyncio.gather(*launches))
        # the first went alone; the two asked for while it was forked went together
        assert batches == [1, 2]
        server_pid = json.loads((tmp_path / "data" / "forkserver.json").read_text())["pid"]
        await wait_for(lambda: all(record.events for record in records), what="every runner started")
        for handle in handles:
            runner = psutil.Process(int(handle.split(":")[0]))
            assert runner.ppid() == server_pid and os.getsid(runner.pid) == runner.pid
        for record in records:
            await wait_for(lambda record=record: record.final() is not None, what="final event")
        for handle in handles:
            for _ in range(100):
                status = await executor.inspect(handle)
                if not status.alive:
                    break
                await asyncio.sleep(0.05)
            assert status.exit_code == 0 and status.reason == "runner succeeded (exit code 0)"
        outputs = [record.output("stdout") for record in records]
        for record, output in zip(records, outputs, strict=True):
            assert output.count(f"[{record.spec.id}]") == 6 and output.count("[") == 6, "no shared output"
    finally:
        await executor.close()
    assert not _running(server_pid), "the fork server stops with the executor"


async def test_forked_runner_cancel_and_kill(gw: FakeGateway, tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path / "data", [sys.executable, "-m", "cmbtask_runner"], extra_env=NO_PROXY)
    await executor.start()
    try:
        records = [gw.add_task("demo", {"steps": 100}) for _ in range(3)]
        polite, unasked, _killed = records
        first, stopped, second = [await executor.launch(_gw_request(gw, r.spec.id)) for r in records]
        await wait_for(lambda: all("step.started" in record.types() for record in records))
        await gw.cancel(polite, "cancelled by alice")  # the gateway's frame comes before its stop
        await executor.cancel(first, grace_s=10)
        status = await executor.inspect(first)
        assert not status.alive and status.exit_code == 2 and polite.final()["event_type"] == "task.cancelled"
        # a stop with no cancel behind it (the runner signalled from outside) is a failure
        await executor.cancel(stopped, grace_s=10)
        status = await executor.inspect(stopped)
        assert not status.alive and status.exit_code == RunnerExit.TERMINATED
        assert status.reason and "terminated by a signal" in status.reason
        assert (unasked.final()["event_type"], unasked.final()["data"]["signal"]) == (
            "task.failed",
            "SIGTERM",
        )
        os.kill(int(second.split(":")[0]), signal.SIGKILL)
        await asyncio.sleep(0.5)
        status = await executor.inspect(second)
        assert not status.alive and status.reason == "runner exited without a final event (killed?)"
    finally:
        await executor.close()


def test_only_the_standard_command_is_forked(tmp_path: Path) -> None:
    assert not LocalExecutor(tmp_path, ["/usr/bin/env", "python", "-m", "cmbtask_runner"]).prefork
    assert not LocalExecutor(tmp_path, [sys.executable, "-m", "cmbtask_runner"], prefork=False).prefork


NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def _gw_request(gw: FakeGateway, task_id: str) -> LaunchRequest:
    return LaunchRequest(
        task_id=task_id,
        session_id="s-" + task_id,
        owner="alice",
        engine="demo",
        mode="one-shot",
        gateway_url=gw.url,
        token=TOKEN,
    )


async def test_sigterm_right_after_a_fork_is_not_lost(tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path / "data", [sys.executable, "-m", "cmbtask_runner"], extra_env=NO_PROXY)
    await executor.start()
    try:
        requests = [_request(f"t{n}") for n in range(10)]  # the gateway URL is dead: they would retry
        handles = [await executor.launch(request) for request in requests]
        began = time.monotonic()
        await asyncio.gather(*(executor.cancel(handle, grace_s=8) for handle in handles))
        assert time.monotonic() - began < 7, "every runner obeyed SIGTERM; none needed SIGKILL"
        assert not any([(await executor.inspect(handle)).alive for handle in handles])
    finally:
        await executor.close()


async def test_a_killed_runner_leaves_no_children(executor: LocalExecutor, tmp_path: Path) -> None:
    handle = await executor.launch(_request())
    info = await _env_of(tmp_path / "data" / "tasks" / "t1")
    os.kill(int(handle.split(":")[0]), signal.SIGKILL)  # the runner alone, not its group
    await asyncio.sleep(0.3)
    assert _running(int(str(info["child"]))), "its child outlived it so far"
    assert not (await executor.inspect(handle)).alive
    for _ in range(50):
        if not _running(int(str(info["child"]))):
            break
        await asyncio.sleep(0.05)
    assert not _running(int(str(info["child"]))), "inspect cleared the dead runner's group"
