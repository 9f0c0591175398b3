"""Unit tests of the library-free parts of the cmbagent engine: AG2 event
mapping, cost accounting, human-input answers, the file watcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cmbtask_protocol import ApprovalStatus, Decision, validate_payload
from cmbtask_runner.engines.base import TaskCancelled
from cmbtask_runner.engines.cmbagent.costs import CostRecorder
from cmbtask_runner.engines.cmbagent.files import FileWatcher
from cmbtask_runner.engines.cmbagent.mapping import EventMapper, code_blocks
from cmbtask_runner.engines.cmbagent.streaming import EXIT, answer_for


def _event(kind: str, **content: Any) -> dict[str, Any]:
    return {"type": kind, "content": {"uuid": "x", **content}}


def test_text_becomes_agent_message_with_sender_and_recipient() -> None:
    mapped = EventMapper().map(
        _event("text", content="# Notes", sender="researcher", recipient="chat_manager")
    )
    assert mapped == [("agent.message", {"agent": "researcher", "recipient": "group", "content": "# Notes"})]
    validate_payload(*mapped[0])


@pytest.mark.parametrize("manager", ["chat_manager", "main_cmbagent_chat"], ids=["post30", "post63"])
def test_each_releases_group_manager_is_the_group(manager: str) -> None:
    mapped = EventMapper().map(_event("text", content="next", sender=manager, recipient="researcher"))
    assert mapped == [("agent.message", {"agent": "group", "recipient": "researcher", "content": "next"})]


def test_code_is_emitted_when_the_executor_runs_it() -> None:
    mapper = EventMapper()
    text = "**Python Code:**\n\n```python\n# filename: codebase/a.py\nprint(1)\n```"
    assert [k for k, _ in mapper.map(_event("text", content=text, sender="engineer_response_formatter"))] == [
        "agent.message"
    ]
    mapped = mapper.map(_event("generate_code_execution_reply", code_blocks=["python"], recipient="executor"))
    assert mapped == [
        (
            "code",
            {
                "language": "python",
                "source": "# filename: codebase/a.py\nprint(1)",
                "filename": "codebase/a.py",
                "agent": "engineer_response_formatter",
            },
        )
    ]
    # a second execution reply has nothing new to show
    assert mapper.map(_event("generate_code_execution_reply", code_blocks=[], recipient="executor")) == []


def test_execution_result_is_marked() -> None:
    content = "Execution results:\n\nExecution output: saved"
    ((kind, data),) = EventMapper().map(_event("text", content=content, sender="executor", recipient="m"))
    assert kind == "agent.message" and data["kind"] == "execution_result"


def test_tool_calls_become_agent_tool_call_with_parsed_arguments() -> None:
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "record_plan", "arguments": '{"n": 2}'}},
        {"id": "c2", "type": "function", "function": {"name": "broken", "arguments": "{not json"}},
    ]
    mapped = EventMapper().map(_event("tool_call", sender="plan_recorder", recipient="m", tool_calls=calls))
    assert mapped[0] == (
        "agent.tool_call",
        {"agent": "plan_recorder", "tool": "record_plan", "arguments": {"n": 2}, "call_id": "c1"},
    )
    assert mapped[1][1]["arguments"] == "{not json"
    for kind, data in mapped:
        validate_payload(kind, data)


def test_record_status_drives_step_events_once_each() -> None:
    mapper = EventMapper(total_steps=2)

    def status(step: int, state: str) -> list[str]:
        arguments = {
            "current_plan_step_number": step,
            "current_status": state,
            "current_sub_task": f"s{step}",
        }
        mapped = mapper.map(_event("execute_function", func_name="record_status", arguments=arguments))
        for kind, data in mapped:
            validate_payload(kind, data)
        return [kind for kind, _ in mapped]

    assert status(1, "in progress") == ["step.started"]
    assert status(1, "in progress") == []
    assert status(1, "completed") == ["step.completed"]
    assert status(2, "failed") == ["step.started", "step.failed"]
    assert status(2, "completed") == ["step.completed"]
    assert mapper.completed_steps == [1, 2]


def test_step_offset_of_a_resumed_plan() -> None:
    mapper = EventMapper(total_steps=3, step_offset=2)
    arguments = {"current_plan_step_number": 1, "current_status": "completed"}
    mapped = mapper.map(_event("execute_function", func_name="record_status", arguments=arguments))
    assert mapped[0][1]["step"] == 3 and mapped[0][1]["total"] == 3


def test_unknown_and_malformed_events_are_ignored() -> None:
    mapper = EventMapper()
    assert mapper.map({"type": "group_chat_run_chat", "content": {"speaker": "x"}}) == []
    assert mapper.map({"type": "text", "content": "not a dict"}) == []
    assert mapper.map({}) == []


def test_code_blocks_without_language_or_filename() -> None:
    assert code_blocks("```\nx = 1\n```") == [{"language": "text", "source": "x = 1"}]
    assert code_blocks("no code here") == []


def test_cost_recorder_totals_and_events() -> None:
    emitted: list[tuple[str, dict[str, Any]]] = []
    recorder = CostRecorder(lambda kind, data: emitted.append((kind, data)))
    recorder.record(
        {"Agent": "researcher", "Model": "gpt-4.1", "Cost": 0.5, "Prompt Tokens": 10, "Completion Tokens": 2}
    )
    recorder.record(
        {"Agent": "control", "Model": "o3-mini", "Cost": 0.25, "Prompt Tokens": 5, "Completion Tokens": 1}
    )
    assert [data["agent"] for _, data in emitted] == ["researcher", "control"]
    assert emitted[1][1]["total_cost_usd"] == 0.75
    for kind, data in emitted:
        validate_payload(kind, data)
    assert recorder.summary() == {"calls": 2, "prompt_tokens": 15, "completion_tokens": 3, "cost_usd": 0.75}


class _Client:
    def __init__(self) -> None:
        self.actual_usage_summary: dict[str, Any] | None = None


class _Agent:
    """Mimics the AG2 fork: after each call, a row with the client's running totals."""

    def __init__(self) -> None:
        self.cost_dict: dict[str, list[Any]] = {
            "Agent": [],
            "Model": [],
            "Cost": [],
            "Prompt Tokens": [],
            "Completion Tokens": [],
            "Total Tokens": [],
        }

    def _generate_oai_reply_from_client(self, llm_client: _Client, messages: Any, cache: Any) -> str:
        usage = llm_client.actual_usage_summary or {
            "total_cost": 0.0,
            "m": {"prompt_tokens": 0, "completion_tokens": 0},
        }
        usage = {
            "total_cost": usage["total_cost"] + 0.01,
            "m": {
                "prompt_tokens": usage["m"]["prompt_tokens"] + 100,
                "completion_tokens": usage["m"]["completion_tokens"] + 10,
            },
        }
        llm_client.actual_usage_summary = usage
        for column, value in (
            ("Agent", "researcher"),
            ("Model", "m"),
            ("Cost", usage["total_cost"]),
            ("Prompt Tokens", usage["m"]["prompt_tokens"]),
            ("Completion Tokens", usage["m"]["completion_tokens"]),
            ("Total Tokens", 0),
        ):
            self.cost_dict[column].append(value)
        return "reply"


def test_cost_hook_turns_running_totals_into_per_call_costs() -> None:
    emitted: list[dict[str, Any]] = []
    recorder = CostRecorder(lambda _kind, data: emitted.append(data))
    undo = recorder.install(_Agent)
    try:
        agent, client = _Agent(), _Client()
        for _ in range(3):
            assert agent._generate_oai_reply_from_client(client, [], None) == "reply"
    finally:
        undo()
    assert [d["prompt_tokens"] for d in emitted] == [100, 100, 100]
    assert [d["completion_tokens"] for d in emitted] == [10, 10, 10]
    assert recorder.summary()["cost_usd"] == pytest.approx(0.03)
    # the library's own rows would have summed to 600 prompt tokens
    assert sum(agent.cost_dict["Prompt Tokens"]) == 600


@pytest.mark.parametrize(
    ("status", "decision", "text", "approved", "expected"),
    [
        (ApprovalStatus.APPROVED, Decision.APPROVE, None, True, ""),
        (ApprovalStatus.ANSWERED, Decision.ANSWER, "  plot it  ", True, "plot it"),
        (ApprovalStatus.ANSWERED, Decision.ANSWER, "EXIT", True, EXIT),
        (ApprovalStatus.ANSWERED, Decision.ANSWER, "", True, ""),
        (ApprovalStatus.EXPIRED, None, None, True, ""),
        (ApprovalStatus.EXPIRED, None, None, False, EXIT),
    ],
)
def test_human_answers(
    status: ApprovalStatus, decision: Decision | None, text: str | None, approved: bool, expected: str
) -> None:
    assert answer_for(status, decision, text, approved) == expected


def test_abort_cancels_the_task() -> None:
    with pytest.raises(TaskCancelled):
        answer_for(ApprovalStatus.REJECTED, Decision.REJECT, None, False)


def test_file_watcher_announces_new_files_once_and_respects_the_size_limit(tmp_path: Path) -> None:
    watched = tmp_path / "cmbagent"
    (watched / ".cache").mkdir(parents=True)
    emitted: list[dict[str, Any]] = []
    watcher = FileWatcher(tmp_path, watched, lambda _k, data: emitted.append(data), max_bytes=10)
    (watched / "notes.md").write_text("# hi")
    (watched / "big.bin").write_bytes(b"x" * 11)
    (watched / ".cache" / "c").write_text("cached")
    watcher.scan(final=False)
    assert emitted == []  # a file is announced once its size held still
    watcher.scan(final=False)
    assert emitted == [{"path": "cmbagent/notes.md", "size": 4, "mime": "text/markdown"}]
    (watched / "plot.png").write_bytes(b"png")
    watcher.scan(final=True)
    watcher.scan(final=True)
    assert [e["path"] for e in emitted] == ["cmbagent/notes.md", "cmbagent/plot.png"]
    assert emitted[1]["mime"] == "image/png"
