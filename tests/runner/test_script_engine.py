"""The script engine and its SDK, in a real runner process."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.runner.runner_fakegw import FakeGateway, TaskRecord, finish, start_runner, wait_for

APPROVAL_SCRIPT = textwrap.dedent(
    """
    import json
    from cmbtask_runner import sdk
    outcome = sdk.request_approval("Go ahead?", timeout_s=TIMEOUT, context={"x": 1})
    print("OUTCOME", json.dumps(outcome.__dict__))
    """
)


def _decide(status: str | None, decision: str | None = None, text: str | None = None) -> Any:
    def decide(record: TaskRecord, frame: dict[str, Any]) -> dict[str, Any] | None:
        if status is None:
            return None
        return {"status": status, "decision": decision, "text": text, "resolved_by": "bob"}

    return decide


def _outcome(record: TaskRecord) -> dict[str, Any]:
    for line in record.output("stdout").splitlines():
        if line.startswith("OUTCOME "):
            result: dict[str, Any] = json.loads(line.removeprefix("OUTCOME "))
            return result
    raise AssertionError(f"no outcome printed; events: {record.types()}")


async def _run_script(gw: FakeGateway, tmp_path: Path, code: str, **task: Any) -> tuple[TaskRecord, int]:
    params = {"code": code, **task.pop("params", {})}
    record = gw.add_task("script", params, **task)
    code_ = await finish(await start_runner(gw, record, tmp_path))
    return record, code_


async def test_streams_stdout_and_stderr_separately(gw: FakeGateway, tmp_path: Path) -> None:
    code = "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n"
    record, exit_code = await _run_script(gw, tmp_path, code)
    assert exit_code == 0
    assert record.output("stdout") == "to out\n" and record.output("stderr") == "to err\n"
    assert record.final()["data"]["result"] == {"exit_code": 0}


async def test_sdk_emit_state_and_env(gw: FakeGateway, tmp_path: Path) -> None:
    gw.state, gw.state_version = {"count": 1}, 3
    code = textwrap.dedent(
        """
        import os
        from cmbtask_runner import sdk
        state = sdk.load_state()
        sdk.emit("agent.message", {"agent": "script", "content": f"count={state['count']}"})
        print("version", sdk.save_state({"count": state["count"] + 1}, checkpoint="bump"))
        in_work_dir = os.getcwd() == os.environ["CMBTASK_WORK_DIR"]
        print("token visible:", "CMBTASK_TASK_TOKEN" in os.environ, in_work_dir)
        """
    )
    record, exit_code = await _run_script(gw, tmp_path, code)
    assert exit_code == 0, record.output()
    message = next(e for e in record.events if e["event_type"] == "agent.message")
    assert message["data"] == {"agent": "script", "content": "count=1"}
    assert gw.state == {"count": 2} and gw.state_version == 4
    assert "version 4\n" in record.output("stdout")
    assert "token visible: False True\n" in record.output("stdout")


@pytest.mark.parametrize(
    ("status", "decision", "approved"),
    [("approved", "approve", True), ("rejected", "reject", False)],
)
async def test_approval_from_a_script(
    gw: FakeGateway, tmp_path: Path, status: str, decision: str, approved: bool
) -> None:
    gw.decide = _decide(status, decision)
    record, exit_code = await _run_script(gw, tmp_path, APPROVAL_SCRIPT.replace("TIMEOUT", "30"))
    assert exit_code == 0
    outcome = _outcome(record)
    assert outcome["approved"] is approved and outcome["status"] == status and outcome["resolved_by"] == "bob"
    (request,) = record.approvals.values()
    assert request["prompt"] == "Go ahead?" and request["context"] == {"x": 1} and request["timeout_s"] == 30


@pytest.mark.parametrize(("policy", "approved"), [("reject", False), ("approve", True)])
async def test_expired_approval_follows_the_policy(
    gw: FakeGateway, tmp_path: Path, policy: str, approved: bool
) -> None:
    gw.decide = _decide("expired")  # the gateway's sweeper expired it
    record, exit_code = await _run_script(
        gw, tmp_path, APPROVAL_SCRIPT.replace("TIMEOUT", "5"), on_timeout=policy
    )
    assert exit_code == 0
    outcome = _outcome(record)
    assert (
        outcome["status"] == "expired" and outcome["on_timeout"] == policy and outcome["approved"] is approved
    )


async def test_expired_approval_under_fail_fails_the_task(gw: FakeGateway, tmp_path: Path) -> None:
    gw.decide = _decide("expired")
    code = APPROVAL_SCRIPT.replace("TIMEOUT", "5") + "import time\ntime.sleep(60)\n"
    record, exit_code = await _run_script(gw, tmp_path, code, on_timeout="fail")
    assert exit_code == 1
    assert "expired" in record.final()["data"]["reason"] and "fail" in record.final()["data"]["reason"]


async def test_local_expiry_when_the_gateway_never_answers(gw: FakeGateway, tmp_path: Path) -> None:
    gw.decide = _decide(None)  # no verdict ever: the runner's own deadline applies the policy
    record, exit_code = await _run_script(gw, tmp_path, APPROVAL_SCRIPT.replace("TIMEOUT", "0.1"))
    assert exit_code == 0
    assert _outcome(record)["status"] == "expired" and _outcome(record)["on_timeout"] == "reject"


async def test_ask_returns_the_answer(gw: FakeGateway, tmp_path: Path) -> None:
    gw.decide = _decide("answered", "answer", "planck-2018")
    code = "from cmbtask_runner import sdk\nprint('ANSWER', sdk.ask('Which dataset?'))\n"
    record, exit_code = await _run_script(gw, tmp_path, code)
    assert exit_code == 0 and "ANSWER planck-2018\n" in record.output("stdout")
    (request,) = record.approvals.values()
    assert request["kind"] == "input" and request["allow_text"] is True


async def test_cancel_stops_the_script_and_its_children(gw: FakeGateway, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print("CHILD", child.pid, flush=True)
        time.sleep(120)
        """
    )
    record = gw.add_task("script", {"code": code})
    proc = await start_runner(gw, record, tmp_path)
    await wait_for(lambda: "CHILD" in record.output("stdout"), what="child started")
    child_pid = int(record.output("stdout").split()[1])
    await gw.cancel(record, "stop it")
    assert await finish(proc, 20) == 2
    assert record.final()["data"]["reason"] == "stop it"
    assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE


async def test_missing_script_and_bad_exit(gw: FakeGateway, tmp_path: Path) -> None:
    missing = gw.add_task("script", {"path": "nope/missing.py"})
    failing = gw.add_task("script", {"code": "import sys\nsys.exit(3)\n"})
    no_command = gw.add_task("script", {"command": ["definitely-not-a-command-xyz"]})
    assert await finish(await start_runner(gw, missing, tmp_path / "m")) == 1
    assert await finish(await start_runner(gw, failing, tmp_path / "f")) == 1
    assert await finish(await start_runner(gw, no_command, tmp_path / "c")) == 1
    assert missing.final()["data"]["reason"] == "script not found: nope/missing.py"
    assert failing.final()["data"]["reason"] == "script exited with code 3"
    assert no_command.final()["data"]["reason"] == "command not found: definitely-not-a-command-xyz"


async def test_command_and_path_sources(gw: FakeGateway, tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "job.py").write_text("print('from a file')\n")
    by_path = gw.add_task("script", {"path": "job.py"})
    by_command = gw.add_task("script", {"command": ["sh", "-c", "echo from a command"]})
    assert await finish(await start_runner(gw, by_path, tmp_path / "p")) == 0
    assert await finish(await start_runner(gw, by_command, tmp_path / "c")) == 0
    assert by_path.output("stdout") == "from a file\n"
    assert by_command.output("stdout") == "from a command\n"


async def test_flooding_script_is_capped_and_still_finishes(gw: FakeGateway, tmp_path: Path) -> None:
    code = "for n in range(200000):\n    print('flood', n)\n"
    record, exit_code = await _run_script(gw, tmp_path, code, params={"max_output_lines_per_s": 1000})
    assert exit_code == 0
    notices = [e["data"] for e in record.events if e["event_type"] == "output" and "dropped" in e["data"]]
    dropped = sum(notice["dropped"] for notice in notices)
    kept = record.output("stdout").count("\n")
    assert kept + dropped == 200000 and dropped > 150000
    assert len(record.events) < 1000, "coalesced and capped: a few events, not 200000"


async def test_the_sdk_works_from_another_python(gw: FakeGateway, tmp_path: Path) -> None:
    code = "from cmbtask_runner import sdk; sdk.emit('agent.message', {'agent': 'sys', 'content': 'hi'})"
    # -S: no site-packages, so nothing of the runner's environment but PYTHONPATH.
    record = gw.add_task("script", {"command": [sys.executable, "-S", "-c", code]})
    assert await finish(await start_runner(gw, record, tmp_path)) == 0, record.output()
    assert any(e["event_type"] == "agent.message" and e["data"]["content"] == "hi" for e in record.events)
