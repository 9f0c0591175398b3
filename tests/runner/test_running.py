"""How a runner process ends: final events, exit codes, exit file, fatal links."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from cmbtask_protocol import RunnerWelcome, TaskSpec, signal_reason
from cmbtask_runner.context import RunnerContext
from cmbtask_runner.engines.base import EngineError, TaskCancelled
from cmbtask_runner.outbox import Outbox
from cmbtask_runner.running import _EngineResult, _final_event

from tests.runner.runner_fakegw import FakeGateway, finish, runner_env, start_runner, wait_for


def _ctx(tmp_path: Path) -> RunnerContext:
    spec = TaskSpec(id="t", session_id="s", engine="demo", mode="one-shot", timeout_s=5)
    ctx = RunnerContext(tmp_path, Outbox(tmp_path / "spill"))
    ctx.on_welcome(RunnerWelcome(task=spec, acked_rseq=0))
    return ctx


def _crash() -> _EngineResult:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        return _EngineResult(error=exc)


def test_final_event_for_each_ending(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    assert _final_event(ctx, _EngineResult(result={"k": 1}), finished=True) == (
        "task.succeeded",
        {"reason": "", "result": {"k": 1}},
    )
    assert _final_event(ctx, _EngineResult(error=EngineError("bad")), finished=True) == (
        "task.failed",
        {"reason": "bad"},
    )
    kind, data = _final_event(ctx, _crash(), finished=True)
    assert kind == "task.failed" and data["reason"] == "RuntimeError: boom"
    assert "Traceback" in data["traceback"] and "boom" in data["traceback"]
    assert _final_event(ctx, _EngineResult(error=TaskCancelled("stop")), finished=True)[0] == "task.cancelled"


def test_cancel_reasons_decide_cancelled_or_timed_out(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ctx.terminate("SIGTERM")
    ctx.cancel("timeout")  # the gateway's reason arrives just after its SIGTERM
    assert _final_event(ctx, _EngineResult(), finished=False) == (
        "task.timed_out",
        {"reason": "timed out after 5.0 s"},
    )
    other = _ctx(tmp_path)
    other.cancel("cancelled by alice")
    other.cancel("timeout")  # a later specific reason does not override an earlier one
    assert _final_event(other, _EngineResult(), finished=False)[1] == {"reason": "cancelled by alice"}


def test_cancel_wakes_a_blocked_approval(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    raised: list[BaseException] = []

    def ask() -> None:
        try:
            ctx.request_approval("ok?")
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    ctx.cancel("stop")
    thread.join(5)
    assert not thread.is_alive() and isinstance(raised[0], TaskCancelled)
    assert ctx.pending_approval_ids() == []


async def test_bad_token_exits_4_with_a_clear_log_line(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo")
    proc = await start_runner(gw, record, tmp_path, CMBTASK_TASK_TOKEN="wrong")
    assert await finish(proc) == 4
    lines = [json.loads(line) for line in (tmp_path / "runner.log").read_text().splitlines()]
    fatal = next(line for line in lines if line["event"] == "runner.link_fatal")
    assert "refused the task token" in fatal["reason"] and fatal["level"] == "error"
    assert json.loads((tmp_path / "exit.json").read_text())["exit_code"] == 4


def test_missing_configuration_exits_64(tmp_path: Path) -> None:
    env = runner_env(FakeGateway(), FakeGateway().add_task("demo"), tmp_path)
    del env["CMBTASK_TASK_TOKEN"]
    done = subprocess.run(
        [sys.executable, "-m", "cmbtask_runner"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 64 and "CMBTASK_TASK_TOKEN" in done.stderr


async def test_final_event_stored_but_ack_lost(gw: FakeGateway, tmp_path: Path) -> None:
    gw.ack = False
    record = gw.add_task("demo", {"steps": 1, "step_delay_s": 0, "lines_per_step": 0})
    proc = await start_runner(gw, record, tmp_path)
    await wait_for(lambda: record.final() is not None, what="final event stored")
    del gw.tasks[record.spec.id]  # the restarted gateway refuses a finished task with 4404
    gw.drop(record)
    assert await finish(proc) == 0, "the outcome is recorded: exit as the task ended"
    assert json.loads((tmp_path / "exit.json").read_text())["acked"] is True


async def test_cancelled_before_start_never_runs_the_engine(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo", {"steps": 1})
    record.cancel_requested = True  # welcome says so
    assert await finish(await start_runner(gw, record, tmp_path)) == 2
    assert record.types() == ["task.cancelled"]


def test_a_signal_no_cancel_followed_fails_naming_the_signal(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ctx.terminate("SIGTERM")
    assert ctx.cancelled.is_set() and ctx.terminated_by == "SIGTERM"
    assert _final_event(ctx, _EngineResult(error=TaskCancelled("stop")), finished=True) == (
        "task.failed",
        {"reason": signal_reason("SIGTERM"), "signal": "SIGTERM"},
    )
    # an engine that finished anyway succeeded
    assert _final_event(ctx, _EngineResult(result={}), finished=True)[0] == "task.succeeded"


def test_a_cancel_after_the_signal_makes_it_a_cancel(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ctx.terminate("SIGTERM")
    ctx.cancel("cancelled by alice")  # the gateway's frame, overtaken by its SIGTERM
    ctx.terminate("SIGINT")  # a later signal changes nothing
    assert ctx.terminated_by is None
    assert _final_event(ctx, _EngineResult(), finished=False) == (
        "task.cancelled",
        {"reason": "cancelled by alice"},
    )
    first = _ctx(tmp_path)
    first.cancel("cancelled by bob")
    first.terminate("SIGTERM")
    assert first.terminated_by is None and first.cancel_reason == "cancelled by bob"
