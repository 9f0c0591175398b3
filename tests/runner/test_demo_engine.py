"""The demo engine in a real runner process, against the in-test gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cmbtask_protocol import RunnerExit, signal_reason

from tests.runner.runner_fakegw import FakeGateway, TaskRecord, finish, start_runner, wait_for

FAST = {"step_delay_s": 0.05, "lines_per_step": 2}


def _approve(status: str = "approved", decision: str = "approve") -> Any:
    def decide(record: TaskRecord, frame: dict[str, Any]) -> dict[str, Any]:
        return {"status": status, "decision": decision, "resolved_by": "alice"}

    return decide


async def test_a_full_run_in_the_documented_order(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo", {"steps": 2, **FAST})
    code = await finish(await start_runner(gw, record, tmp_path))
    assert code == 0
    types = [t for t in record.types() if t != "output"]
    per_step = ["step.started", "agent.message", "agent.message", "code", "step.progress"]
    per_step_end = ["cost.update", "step.completed"]
    assert types == ["task.started", "plan.proposed", *(per_step + per_step_end) * 2, "task.succeeded"]
    started = record.events[0]["data"]
    assert started["engine"] == "demo" and started["pid"] > 0 and started["host"]
    assert record.output("stdout").splitlines() == [
        f"[{record.spec.id}] step {s}/2 line {n}/2" for s in (1, 2) for n in (1, 2)
    ]
    order = [(e["event_type"], e["data"].get("text", "")) for e in record.events]
    first_progress = order.index(("step.progress", ""))
    assert any("step 1/2 line 2/2" in text for _, text in order[:first_progress]), "output precedes progress"
    assert gw.state == {"completed_steps": 2, "total_steps": 2, "engine": "demo"} and gw.state_version == 2
    exit_record = json.loads((tmp_path / "exit.json").read_text())
    assert exit_record["exit_code"] == 0 and exit_record["final_event"] == "task.succeeded"


async def test_resume_skips_completed_steps(gw: FakeGateway, tmp_path: Path) -> None:
    gw.state, gw.state_version = {"completed_steps": 2}, 7
    record = gw.add_task("demo", {"steps": 3, **FAST})
    assert await finish(await start_runner(gw, record, tmp_path)) == 0
    assert record.events[0]["data"]["resumed_from_version"] == 7
    started = [e["data"]["step"] for e in record.events if e["event_type"] == "step.started"]
    assert started == [3]
    assert gw.state_version == 8 and gw.state["completed_steps"] == 3


async def test_plan_approval_approved_then_runs(gw: FakeGateway, tmp_path: Path) -> None:
    gw.decide = _approve()
    record = gw.add_task("demo", {"steps": 1, "approve_plan": True, **FAST})
    assert await finish(await start_runner(gw, record, tmp_path)) == 0
    (approval,) = record.approvals.values()
    assert approval["kind"] == "plan" and len(approval["context"]["steps"]) == 1
    assert record.final()["event_type"] == "task.succeeded"


async def test_plan_rejected_fails_with_who(gw: FakeGateway, tmp_path: Path) -> None:
    gw.decide = _approve("rejected", "reject")
    record = gw.add_task("demo", {"steps": 2, "approve_plan": True, **FAST})
    assert await finish(await start_runner(gw, record, tmp_path)) == 1
    final = record.final()
    assert final["event_type"] == "task.failed" and final["data"]["reason"] == "plan rejected by alice"
    assert "step.started" not in record.types()


async def test_fail_at_step(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo", {"steps": 3, "fail_at_step": 2, **FAST})
    assert await finish(await start_runner(gw, record, tmp_path)) == 1
    types = record.types()
    assert types.count("step.completed") == 1 and "step.failed" in types
    assert record.final()["data"]["reason"] == "step 2 failed (fail_at_step=2)"
    assert "traceback" not in record.final()["data"], "an EngineError is a message, not a crash"


async def test_cancel_while_waiting_for_approval(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo", {"steps": 2, "approve_steps": [1], **FAST})
    proc = await start_runner(gw, record, tmp_path)
    await wait_for(lambda: bool(record.approvals), what="approval request")
    await gw.cancel(record, "cancelled by alice")
    assert await finish(proc) == 2
    assert record.final()["event_type"] == "task.cancelled"
    assert record.final()["data"]["reason"] == "cancelled by alice"


async def test_sigterm_nobody_asked_for_fails_the_task_naming_it(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo", {"steps": 50, "step_delay_s": 0.2, "lines_per_step": 1})
    proc = await start_runner(gw, record, tmp_path)
    await wait_for(lambda: "step.started" in record.types(), what="first step")
    proc.terminate()  # a pod deleted, a node drained: no cancel frame
    assert await finish(proc, 15) == RunnerExit.TERMINATED
    final = record.final()
    assert final["event_type"] == "task.failed" and final["data"]["signal"] == "SIGTERM"
    assert final["data"]["reason"] == signal_reason("SIGTERM")
    exit_record = json.loads((tmp_path / "exit.json").read_text())
    assert (exit_record["exit_code"], exit_record["final_event"]) == (RunnerExit.TERMINATED, "task.failed")


async def test_sigterm_with_the_gateways_cancel_ends_cancelled(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo", {"steps": 50, "step_delay_s": 0.2, "lines_per_step": 1})
    proc = await start_runner(gw, record, tmp_path)
    await wait_for(lambda: "step.started" in record.types(), what="first step")
    proc.terminate()  # the signal may overtake the gateway's frame
    await gw.cancel(record, "cancelled by alice")
    assert await finish(proc, 15) == RunnerExit.CANCELLED
    assert record.final()["event_type"] == "task.cancelled"
    assert record.final()["data"]["reason"] == "cancelled by alice"


async def test_gateway_timeout_cancel_ends_timed_out(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo", {"steps": 50, "step_delay_s": 0.2, "lines_per_step": 1}, timeout_s=60)
    proc = await start_runner(gw, record, tmp_path)
    await wait_for(lambda: "step.started" in record.types(), what="first step")
    proc.terminate()  # the gateway sends SIGTERM and the cancel frame together
    await gw.cancel(record, "timeout")
    assert await finish(proc, 15) == 3
    assert record.final()["event_type"] == "task.timed_out"


async def test_local_timeout_backstop(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo", {"steps": 50, "step_delay_s": 0.2, "lines_per_step": 1}, timeout_s=0.5)
    assert await finish(await start_runner(gw, record, tmp_path), 20) == 3
    assert record.final()["event_type"] == "task.timed_out"


async def test_state_conflict_fails_clearly(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo", {"steps": 3, "step_delay_s": 0.3, "lines_per_step": 0})
    proc = await start_runner(gw, record, tmp_path)
    await wait_for(lambda: "step.started" in record.types(), what="first step")
    gw.state_version = 41  # someone else saved meanwhile
    assert await finish(proc) == 1
    reason = record.final()["data"]["reason"]
    assert "session state changed elsewhere" in reason and "stored 41" in reason


async def test_bad_params_and_unknown_engine_fail_with_clear_reasons(gw: FakeGateway, tmp_path: Path) -> None:
    bad = gw.add_task("demo", {"steps": 0, "colour": "red"})
    unknown = gw.add_task("no-such-engine")
    assert await finish(await start_runner(gw, bad, tmp_path / "bad")) == 1
    assert await finish(await start_runner(gw, unknown, tmp_path / "unknown")) == 1
    reason = bad.final()["data"]["reason"]
    assert reason.startswith("invalid params:") and "steps" in reason and "colour" in reason
    reason = unknown.final()["data"]["reason"]
    assert reason.startswith("unknown engine 'no-such-engine' (installed: ") and "demo, script" in reason


async def test_runner_logs_stay_out_of_the_task_output(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo", {"steps": 1, **FAST})
    assert await finish(await start_runner(gw, record, tmp_path)) == 0
    log_lines = (tmp_path / "runner.log").read_text().splitlines()
    assert any(json.loads(line)["event"] == "link.welcome" for line in log_lines)
    assert all(json.loads(line)["task_id"] == record.spec.id for line in log_lines)
    assert "link.welcome" not in record.output()
