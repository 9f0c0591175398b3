"""The engine's checks and the planning-control resume, without the library:
a stand-in ``cmbagent`` module records what the workflows ask of it."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cmbtask_protocol import ApprovalStatus, Decision, OnTimeout, TaskSpec
from cmbtask_runner.engines.base import ApprovalOutcome, EngineError
from cmbtask_runner.engines.cmbagent import CmbAgentEngine, library, workflows
from cmbtask_runner.engines.cmbagent.mapping import EventMapper
from cmbtask_runner.engines.cmbagent.params import CmbAgentParams

PLAN = [
    {"sub_task": "collect", "sub_task_agent": "engineer", "bullet_points": ["get data"]},
    {"sub_task": "write up", "sub_task_agent": "researcher", "bullet_points": ["notes"]},
]


def _task(mode: str = "one-shot", prompt: str = "T_cmb?", **params: Any) -> TaskSpec:
    return TaskSpec(id="t1", session_id="s1", engine="cmbagent", mode=mode, prompt=prompt, params=params)


@pytest.fixture
def with_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in library.KEY_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("CMBAGENT_MODELS", raising=False)
    monkeypatch.setattr(library, "is_installed", lambda: True)
    # as if the package could not be read: the modes every supported release has
    monkeypatch.setattr(library, "exported_names", lambda: None)
    monkeypatch.setattr(library, "installed_version", lambda: None)


@pytest.mark.usefixtures("with_key")
def test_validate_accepts_a_runnable_task() -> None:
    CmbAgentEngine().validate(_task(agent="researcher", max_output_lines_per_s=100))


@pytest.mark.usefixtures("with_key")
@pytest.mark.parametrize(
    ("task", "message"),
    [
        (_task(mode="no-such-mode"), "no mode 'no-such-mode'"),
        (_task(mode="copilot"), r"copilot is not part of cmbagent 0.0.1.post30 or 0.0.1.post63 \(it needs"),
        (_task(mode="control"), "needs params.plan"),
        (_task(prompt="  "), "needs a prompt"),
        (_task(api_key="sk-from-the-body"), "invalid params"),
        (_task(agent="planner"), "invalid params"),
    ],
)
def test_validate_refuses_with_a_clear_message(task: TaskSpec, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        CmbAgentEngine().validate(task)


def test_validate_without_the_extra(with_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(library, "is_installed", lambda: False)
    with pytest.raises(EngineError, match=r"extra is not installed .*cmbtask\[cmbagent\]"):
        CmbAgentEngine().validate(_task())


def test_validate_without_any_key(with_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", " ")
    with pytest.raises(EngineError, match=r"no LLM API key .*OPENAI_API_KEY"):
        CmbAgentEngine().validate(_task())


def test_validate_with_malformed_model_overrides(with_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMBAGENT_MODELS", "{not json")
    with pytest.raises(EngineError, match="CMBAGENT_MODELS"):
        CmbAgentEngine().validate(_task())


def _utils() -> SimpleNamespace:
    def get_model_config(model: str) -> dict[str, Any]:
        api_type = "anthropic" if "claude" in model else "openai"
        return {"model": model, "api_type": api_type}

    return SimpleNamespace(get_model_config=get_model_config)


def test_models_come_from_the_environment(with_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def workflow(task: str, engineer_model: str = "gpt-4.1", plan_reviewer_model: str = "claude-3-7") -> None:
        """A workflow whose plan reviewer defaults to a provider without a key."""

    monkeypatch.setenv("CMBAGENT_MODEL", "gpt-4o-fallback")
    assert library.model_kwargs(workflow, _utils()) == {
        "engineer_model": "gpt-4.1",
        "plan_reviewer_model": "gpt-4o-fallback",
    }
    monkeypatch.setenv("CMBAGENT_MODELS", json.dumps({"engineer": "o3-mini"}))
    assert library.model_kwargs(workflow, _utils())["engineer_model"] == "o3-mini"


class _Ctx:
    """The EngineContext surface the workflows use."""

    def __init__(self, work_dir: Path, state: dict[str, Any] | None) -> None:
        self.task = _task(mode="planning-control")
        self.work_dir = work_dir
        self.cancelled = threading.Event()
        self.state = state
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.saved: list[tuple[dict[str, Any], str]] = []
        self.approvals: list[str] = []

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.events.append((event_type, data))

    def request_approval(self, prompt: str, **kwargs: Any) -> ApprovalOutcome:
        self.approvals.append(prompt)
        return ApprovalOutcome(ApprovalStatus.APPROVED, Decision.APPROVE, None, "alice")

    def load_state(self) -> dict[str, Any] | None:
        return None if self.state is None else dict(self.state)

    def save_state(self, state: dict[str, Any], checkpoint: str = "") -> int:
        self.saved.append((state, checkpoint))
        self.state = state
        return len(self.saved)


def _fake_lib(mapper: EventMapper, completes: Sequence[int]) -> tuple[SimpleNamespace, list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def control(
        task: str, plan: str = "", work_dir: str = "", engineer_model: str = "gpt-4.1", **kw: Any
    ) -> None:
        calls.append({"plan": json.loads(Path(plan).read_text()), "work_dir": work_dir, **kw})
        for step in completes:  # what the control agent reports while it works
            arguments = {"current_plan_step_number": step, "current_status": "completed"}
            mapper.map(
                {
                    "type": "execute_function",
                    "content": {"func_name": "record_status", "arguments": arguments},
                }
            )

    def planning(task: str, planner_model: str = "gpt-4.1", plan_reviewer_model: str = "gpt-4.1") -> None:
        raise AssertionError("a resumed session must not plan again")

    lib = SimpleNamespace(control=control, planning_and_control_context_carryover=planning, utils=_utils())
    return lib, calls


def _run(
    ctx: _Ctx, params: CmbAgentParams, lib: Any, root: Path, mapper: EventMapper, function: Any
) -> workflows.Run:
    return workflows.Run(ctx=ctx, params=params, lib=lib, root=root, mapper=mapper, function=function)  # type: ignore[arg-type]


@pytest.mark.usefixtures("with_key")
def test_planning_control_resumes_after_the_last_completed_step(tmp_path: Path) -> None:
    state = {"kind": workflows.STATE_KIND, "plan": PLAN, "completed_steps": 1}
    ctx = _Ctx(tmp_path, state)
    mapper = EventMapper()
    lib, calls = _fake_lib(mapper, completes=[1])
    run = _run(ctx, CmbAgentParams(), lib, tmp_path, mapper, lib.planning_and_control_context_carryover)

    result = workflows.planning_control(run)

    assert [c["plan"]["sub_tasks"] for c in calls] == [PLAN[1:]]
    assert result == {"steps": 2, "resumed_after_step": 1}
    assert ctx.approvals == []  # the plan was approved by the earlier task
    assert ctx.saved[-1][0]["completed_steps"] == 2
    assert mapper.completed_steps == [2]


@pytest.mark.usefixtures("with_key")
def test_a_finished_plan_is_not_run_again(tmp_path: Path) -> None:
    ctx = _Ctx(tmp_path, {"kind": workflows.STATE_KIND, "plan": PLAN, "completed_steps": 2})
    mapper = EventMapper()
    lib, calls = _fake_lib(mapper, completes=[])
    run = _run(ctx, CmbAgentParams(), lib, tmp_path, mapper, lib.planning_and_control_context_carryover)
    with pytest.raises(EngineError, match="already complete"):
        workflows.planning_control(run)
    assert calls == []


@pytest.mark.usefixtures("with_key")
def test_control_mode_runs_the_given_plan(tmp_path: Path) -> None:
    ctx = _Ctx(tmp_path, None)
    mapper = EventMapper()
    lib, calls = _fake_lib(mapper, completes=[1, 2])
    params = CmbAgentParams.model_validate({"plan": PLAN})
    run = _run(ctx, params, lib, tmp_path, mapper, lib.control)
    assert workflows.control(run) == {"steps": 2}
    assert calls[0]["plan"]["sub_tasks"] == PLAN and calls[0]["max_plan_steps"] == 2
    proposed = [data for kind, data in ctx.events if kind == "plan.proposed"]
    assert [s["title"] for s in proposed[0]["steps"]] == ["collect", "write up"]
    assert mapper.completed_steps == [1, 2]


def test_on_timeout_policy_outcome_is_what_the_plan_gate_reads() -> None:
    expired = ApprovalOutcome(ApprovalStatus.EXPIRED, None, None, None, on_timeout=OnTimeout.APPROVE)
    assert expired.approved


class _Event:
    def __init__(self, dumped: dict[str, Any]) -> None:
        self.dumped = dumped

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return self.dumped


def test_io_stream_emits_events_and_asks_humans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cmbtask_runner.engines.base import TaskCancelled
    from cmbtask_runner.engines.cmbagent.streaming import TaskIOStream

    ctx = _Ctx(tmp_path, None)
    stream = TaskIOStream(ctx, EventMapper())  # type: ignore[arg-type]
    stream.send(
        _Event({"type": "text", "content": {"content": "hi", "sender": "researcher", "recipient": "x"}})
    )
    stream.send(_Event({"type": "group_chat_run_chat", "content": {"speaker": "researcher"}}))
    assert [kind for kind, _ in ctx.events] == ["agent.message"]
    stream.print("library", "says", end="!\n")
    assert capsys.readouterr().out == "library says!\n"
    assert stream.input("Type your suggestion:") == ""  # the stand-in context approves: continue
    assert "Type your suggestion:" in ctx.approvals[0] and "exit" in ctx.approvals[0]
    ctx.cancelled.set()
    with pytest.raises(TaskCancelled):
        stream.send(_Event({"type": "text", "content": {"content": "late", "sender": "a", "recipient": "b"}}))
