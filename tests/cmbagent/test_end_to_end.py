"""Real CMBAgent workflows through a real gateway and runner, against the fake
OpenAI server: what a user submits, sees, answers and gets back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.gateway import GatewayProcess

from .conftest import DUMMY_KEY, task_dir
from .driving import TaskRun, follow, run_task, submit
from .openai_server import FakeOpenAI
from .releases import MAINTAINED, canonical, notes_path, require_mode

pytestmark = pytest.mark.cmbagent

PROMPT = "What is the temperature of the cosmic microwave background today?"


def _billed(fake: FakeOpenAI, before: int) -> list[dict[str, Any]]:
    return fake.ledger.snapshot()[before:]


def _assert_costs_match(run: TaskRun, billed: list[dict[str, Any]]) -> None:
    """Every call the provider billed shows up as one cost.update, tokens equal."""
    updates = run.of("cost.update")
    assert len(updates) == len(billed) > 0
    assert sum(u["data"]["prompt_tokens"] for u in updates) == sum(c["prompt_tokens"] for c in billed)
    assert sum(u["data"]["completion_tokens"] for u in updates) == sum(c["completion_tokens"] for c in billed)
    assert {(canonical(u["data"]["agent"]), u["data"]["model"]) for u in updates} == {
        (c["agent"], c["model"]) for c in billed
    }
    assert all(u["data"]["cost_usd"] > 0 for u in updates)
    result = run.final["data"]["result"]
    assert result["prompt_tokens"] == sum(c["prompt_tokens"] for c in billed)
    assert result["cost_usd"] == pytest.approx(sum(u["data"]["cost_usd"] for u in updates), rel=1e-6)


def _markdown_files(run: TaskRun) -> list[str]:
    return [e["data"]["path"] for e in run.of("file.created") if e["data"]["path"].endswith(".md")]


def test_one_shot_researcher_runs_to_completion(
    client: httpx.Client, fake_openai: tuple[str, FakeOpenAI], cmb_gateway: GatewayProcess
) -> None:
    _url, fake = fake_openai
    before = len(fake.ledger.snapshot())
    run = run_task(client, "one-shot", PROMPT, {"agent": "researcher"})

    assert run.final["type"] == "task.succeeded", run.final
    messages = run.of("agent.message")
    assert any(m["data"]["agent"] == "researcher" and "2.7255 K" in m["data"]["content"] for m in messages)
    assert {"agent.tool_call", "output", "step.started", "step.completed"} <= {e["type"] for e in run.events}
    tools = {e["data"]["tool"] for e in run.of("agent.tool_call")}
    if MAINTAINED:
        # its researcher_executor saves the notes itself; the session ends with the step
        assert "record_status" in tools
    else:
        assert {"record_status", "terminate_session"} <= tools
        # upstream's executor saves the notes by running them as a markdown block
        assert any(c["data"]["language"] == "markdown" for c in run.of("code"))
        assert any("Cost report data saved" in o["data"]["text"] for o in run.of("output"))
    _assert_costs_match(run, _billed(fake, before))

    notes = _markdown_files(run)
    assert notes == [notes_path()]
    saved = task_dir(cmb_gateway, run.task_id) / notes[0]
    assert "2.7255 K" in saved.read_text()
    served = client.get(f"/api/tasks/{run.task_id}/files/{notes[0]}")
    assert served.status_code == 200 and "2.7255 K" in served.text

    # The API key reached the provider (the fake saw it) but no event, log or file.
    assert {c["api_key_suffix"] for c in _billed(fake, before)} == {DUMMY_KEY[-6:]}
    assert DUMMY_KEY not in str(run.events)
    runner_files = [p for p in task_dir(cmb_gateway, run.task_id).rglob("*") if p.is_file()]
    assert any(p.name == "runner.log" and "cmbagent.run" in p.read_text() for p in runner_files)
    assert not [p for p in runner_files if DUMMY_KEY.encode() in p.read_bytes()]


def test_hitl_interactive_asks_takes_instructions_then_exit(
    client: httpx.Client, fake_openai: tuple[str, FakeOpenAI]
) -> None:
    require_mode("hitl-interactive")
    _url, fake = fake_openai
    before = len(fake.ledger.snapshot())
    answers = iter([("answer", "Add the measurement uncertainty."), ("answer", "exit")])
    run = run_task(
        client, "hitl-interactive", PROMPT, {"agent": "researcher"}, answer=lambda _a: next(answers)
    )

    assert run.final["type"] == "task.succeeded", run.final
    assert [a["kind"] for a in run.approvals] == ["input", "input"]
    first = run.approvals[0]
    assert set(first["options"]) == {"approve", "answer", "reject"} and first["allow_text"]
    assert "exit" in first["prompt"]
    assert len(run.of("approval.requested")) == 2 and len(run.of("approval.resolved")) == 2
    researcher = [m["data"]["content"] for m in run.of("agent.message") if m["data"]["agent"] == "researcher"]
    assert len(researcher) == 2 and "Add the measurement uncertainty." in researcher[1]
    admin = [m["data"]["content"] for m in run.of("agent.message") if m["data"]["agent"] == "admin"]
    assert admin == ["Add the measurement uncertainty."]
    _assert_costs_match(run, _billed(fake, before))
    assert _markdown_files(run)


def test_planning_control_shows_plan_for_approval_then_runs_it(
    client: httpx.Client, fake_openai: tuple[str, FakeOpenAI]
) -> None:
    _url, fake = fake_openai
    before = len(fake.ledger.snapshot())
    run = run_task(
        client,
        "planning-control",
        PROMPT,
        {"max_plan_steps": 1, "n_plan_reviews": 1},
        answer=lambda _a: ("approve", None),
    )

    assert run.final["type"] == "task.succeeded", run.final
    plans = run.of("plan.proposed")
    assert len(plans) == 1 and len(plans[0]["data"]["steps"]) == 1
    assert plans[0]["data"]["steps"][0]["agent"] == "researcher"
    assert [a["kind"] for a in run.approvals] == ["plan"]
    assert "Run this plan?" in run.approvals[0]["prompt"]
    # the plan is approved before control starts executing it
    seqs = {e["type"]: e["seq"] for e in reversed(run.events)}
    assert seqs["plan.proposed"] < seqs["approval.resolved"] < seqs["step.started"]
    assert [e["data"]["step"] for e in run.of("step.completed")] == [1]
    assert run.of("state.saved")
    agents = {m["data"]["agent"] for m in run.of("agent.message")}
    assert {"planner", "plan_reviewer", "researcher"} <= agents
    _assert_costs_match(run, _billed(fake, before))
    paths = [e["data"]["path"] for e in run.of("file.created")]
    assert "cmbagent/planning/final_plan.json" in paths
    assert any(p.startswith("cmbagent/control/") for p in _markdown_files(run))
    # each phase's chat log and cost report (post63 puts reports in cost/, post30 beside the chats)
    for phase in ("planning", "control"):
        if not MAINTAINED:  # the maintained line keeps no chat logs on disk
            assert any(p.startswith(f"cmbagent/{phase}/chats/") for p in paths), paths
        assert any(p.startswith(f"cmbagent/{phase}/") and "/cost_report_" in p for p in paths), paths


def test_rejected_plan_fails_the_task_without_running_it(client: httpx.Client) -> None:
    run = run_task(
        client,
        "planning-control",
        PROMPT,
        {"max_plan_steps": 1, "n_plan_reviews": 0},
        answer=lambda _a: ("reject", None),
    )
    assert run.final["type"] == "task.failed"
    assert "plan rejected" in run.final["data"]["reason"]
    assert not run.of("step.started")


def test_missing_plan_for_control_fails_at_once(client: httpx.Client) -> None:
    require_mode("control")
    run = run_task(client, "control", PROMPT, {}, timeout_s=60)
    assert run.final["type"] == "task.failed"
    assert "params.plan" in run.final["data"]["reason"]
    assert not run.of("agent.message")


def test_plan_sent_back_with_changes_is_planned_again(client: httpx.Client) -> None:
    answers = iter([("modify", "Cite the FIRAS measurement."), ("approve", None)])
    run = run_task(
        client,
        "planning-control",
        PROMPT,
        {"max_plan_steps": 1, "n_plan_reviews": 0},
        answer=lambda _a: next(answers),
    )
    assert run.final["type"] == "task.succeeded", run.final
    assert len(run.of("plan.proposed")) == 2
    assert [a["answer"] for a in run.approvals] == ["modify", "approve"]
    paths = {e["data"]["path"] for e in run.of("file.created")}
    # upstream: each revision plans in a directory of its own; the maintained line re-plans in place
    revised = set() if MAINTAINED else {"cmbagent/planning_1/final_plan.json"}
    assert {"cmbagent/planning/final_plan.json", *revised} <= paths
    assert [e["data"]["step"] for e in run.of("step.completed")] == [1]


def test_cancel_while_waiting_for_human_input(client: httpx.Client) -> None:
    require_mode("hitl-interactive")
    run = submit(client, "hitl-interactive", PROMPT, {"agent": "researcher"})

    def cancel(_approval: dict[str, Any]) -> None:
        client.post(f"/api/tasks/{run.task_id}/cancel").raise_for_status()

    follow(client, run, cancel, timeout_s=120)
    assert run.final["type"] == "task.cancelled", run.final
    assert len(run.of("approval.requested")) == 1
    pending = client.get("/api/approvals", params={"status": "pending", "session_id": run.session_id})
    assert pending.json()["items"] == []


def test_unanswered_input_follows_the_timeout_policy(client: httpx.Client) -> None:
    # on_timeout "reject": an expired prompt ends the chat, as typing "exit" would.
    require_mode("hitl-interactive")
    run = run_task(
        client,
        "hitl-interactive",
        PROMPT,
        {"agent": "researcher"},
        approval_timeout_s=1,
        on_timeout="reject",
    )
    assert run.final["type"] == "task.succeeded", run.final
    assert len(run.of("approval.requested")) == 1
    assert len(run.of("approval.expired")) == 1
    assert len([m for m in run.of("agent.message") if m["data"]["agent"] == "researcher"]) == 1


def test_planning_control_resumes_in_the_same_session(
    client: httpx.Client, fake_openai: tuple[str, FakeOpenAI]
) -> None:
    _url, fake = fake_openai
    fake.script.plan_steps = 2
    try:
        # Nine chat rounds finish step 1 of 2 (measured on 0.0.1.post30 and post63), then the chat
        # stops. The maintained line gives each step its own rounds: there its controller gives up
        # on step 2 instead.
        fake.script.controller_fails_after = 1 if MAINTAINED else None
        fake.script.controller_completions = 0
        params = {"max_plan_steps": 2, "n_plan_reviews": 0, "max_rounds": 9}
        first = run_task(client, "planning-control", PROMPT, params, answer=lambda _a: ("approve", None))
        assert first.final["type"] == "task.failed", first.final
        assert "continues from step 2" in first.final["data"]["reason"]
        assert [e["data"]["step"] for e in first.of("step.completed")] == [1]
        assert len(first.of("state.saved")) == 2  # plan approved, step 1 completed

        fake.script.controller_fails_after = None
        second = submit(client, "planning-control", PROMPT, {**params, "max_rounds": 50}, first.session_id)
        follow(client, second, lambda _a: ("reject", None), timeout_s=240)
    finally:
        fake.script.plan_steps = 1
        fake.script.controller_fails_after = None
    assert second.final["type"] == "task.succeeded", second.final
    assert second.approvals == [] and not second.of("plan.proposed")  # approved once, not planned again
    assert second.of("task.started")[0]["data"]["resumed_from_version"] is not None
    assert [e["data"]["step"] for e in second.of("step.started")] == [2]
    assert [(e["data"]["step"], e["data"]["total"]) for e in second.of("step.completed")] == [(2, 2)]
    assert second.final["data"]["result"]["resumed_after_step"] == 1


def test_one_shot_engineer_writes_and_runs_code(
    client: httpx.Client, fake_openai: tuple[str, FakeOpenAI], cmb_gateway: GatewayProcess
) -> None:
    _url, fake = fake_openai
    before = len(fake.ledger.snapshot())
    run = run_task(client, "one-shot", PROMPT, {"agent": "engineer"})

    assert run.final["type"] == "task.succeeded", run.final
    code = [c["data"] for c in run.of("code") if c["data"]["language"] == "python"]
    assert code and code[0]["filename"] == "codebase/summary.py" and "T_cmb" in code[0]["source"]
    results = [m["data"] for m in run.of("agent.message") if m["data"].get("kind") == "execution_result"]
    assert any("T_cmb = 2.7255 K" in r["content"] for r in results)
    transfers = [
        t["data"] for t in run.of("agent.tool_call") if t["data"]["tool"] == "post_execution_transfer"
    ]
    assert transfers and transfers[0]["arguments"]["execution_status"] == "success"
    paths = {e["data"]["path"] for e in run.of("file.created")}
    assert {"cmbagent/codebase/summary.py", "cmbagent/data/result.txt"} <= paths
    result = task_dir(cmb_gateway, run.task_id) / "cmbagent" / "data" / "result.txt"
    assert result.read_text() == "T_cmb = 2.7255 K\n"
    _assert_costs_match(run, _billed(fake, before))
