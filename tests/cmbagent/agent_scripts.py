"""Scripted replies of CMBAgent's agents, for the fake OpenAI server.

Each agent is recognised by a sentence of its system prompt (the prompts
come from cmbagent's agent YAML files) and answers what a well-behaved model
would: the researcher writes markdown notes, its formatter turns them into
the structured output, the control agent records the step status, the
planner proposes a plan of ``plan_steps`` steps, the recorders call their
tools. State that a real model would read from the conversation (which step,
how many notes so far) is read from the request's messages the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AGENT_SIGNATURES", "AgentScript", "Scripted", "recognise"]

#: (agent name, a phrase unique to its system prompt), most specific first
AGENT_SIGNATURES: tuple[tuple[str, str], ...] = (
    ("researcher_response_formatter", "format the response provided by the researcher agent"),
    ("researcher_executor", "You save content provided by the researcher"),
    ("reviewer_response_formatter", "format the response provided by the plan_reviewer"),
    ("planner_response_formatter", "structure the response provided by the planner agent"),
    ("engineer_response_formatter", "you format the response provided by the engineer agent"),
    ("executor_response_formatter", "You call your tool post_execution_transfer"),
    ("control_starter", "You are the control_starter agent"),
    ("controller", "You are the controller agent"),
    ("control", "You are the control agent"),
    ("plan_setter", "You are the plan setter agent"),
    ("plan_recorder", "call your tool record_plan"),
    ("review_recorder", "call your tool record_review"),
    ("plan_reviewer", "You are a plan reviewer"),
    ("planner", "You are the planner agent"),
    ("researcher", "You are the researcher agent"),
    ("engineer", "You are the engineer agent"),
    ("terminator", "Terminate the session"),
)


def recognise(messages: list[dict[str, Any]]) -> str:
    """The agent that sent this request, from its system prompt."""
    system = "\n".join(_text(m) for m in messages if m.get("role") in {"system", "developer"})
    for name, phrase in AGENT_SIGNATURES:
        if phrase in system:
            return name
    return "unknown"


@dataclass(frozen=True, slots=True)
class Scripted:
    """What the agent would answer; the server makes it fit the request."""

    text: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    #: a candidate for ``response_format`` (replaced if it does not validate)
    json_value: Any = None
    #: further candidates, for releases whose schema differs (tried in order)
    json_alternatives: tuple[Any, ...] = ()


@dataclass(slots=True)
class AgentScript:
    """The replies of one test scenario."""

    plan_steps: int = 1
    plan_agent: str = "researcher"
    research_text: str = "The CMB temperature today is 2.7255 K (Fixsen 2009)."
    #: the maintained line's controller declares the step failed after this many completed steps
    controller_fails_after: int | None = None
    #: steps the controller has declared completed so far (reset it with the knob above)
    controller_completions: int = 0

    def reply(self, agent: str, messages: list[dict[str, Any]]) -> Scripted:
        handler = getattr(self, f"_{agent}", None)
        if handler is None:
            return Scripted(text="Noted.")
        result: Scripted = handler(messages)
        return result

    # ---- one-shot / chat: researcher chain -----------------------------------

    def _researcher(self, messages: list[dict[str, Any]]) -> Scripted:
        turn = _count_from(messages, "researcher") + 1
        latest = _last_human_instruction(messages)
        body = f"# Research notes {turn}\n\n{self.research_text}\n"
        if latest:
            body += f"\n## Following the instruction\n\n{latest}\n"
        return Scripted(text=body)

    def _researcher_response_formatter(self, messages: list[dict[str, Any]]) -> Scripted:
        notes = _last_from(messages, "researcher") or self.research_text
        # The formatter sees only the last message, so the turn comes from the notes' heading.
        heading = re.search(r"Research notes (\d+)", notes)
        turn = int(heading.group(1)) if heading else 1
        return Scripted(json_value={"markdown_block": notes, "filename": f"research_notes_{turn}.md"})

    def _researcher_executor(self, messages: list[dict[str, Any]]) -> Scripted:
        return Scripted(text="The notes are saved.")

    def _control(self, messages: list[dict[str, Any]]) -> Scripted:
        system = _system(messages)
        step = max(1, _int_after(system, "**Current step in plan:**", default=1))
        agent = _word_after(system, "**Agent in charge:**") or self.plan_agent
        if agent not in {"engineer", "researcher", "idea_maker", "idea_hater"}:
            agent = self.plan_agent
        last = _last_status(messages)
        if _work_since_last_status(messages):
            status = "completed"
            step = int(last.get("current_plan_step_number", step)) if last else step
        elif last and last.get("current_status") == "completed":
            # the previous step is done: a real model moves on to the next one
            status, step, agent = "in progress", int(last["current_plan_step_number"]) + 1, self.plan_agent
        else:
            status = "in progress"
        args = {
            "current_status": status,
            "current_plan_step_number": step,
            "current_sub_task": f"step {step} of the plan",
            "current_instructions": "Follow the plan.",
            "agent_for_sub_task": agent,
        }
        return Scripted(tool="record_status", arguments=args)

    def _controller(self, messages: list[dict[str, Any]]) -> Scripted:
        """The maintained line's control agent: the step comes from its context,
        it only says whether the step is done."""
        status = "completed" if _work_since_last_status(messages) else "in progress"
        if (
            self.controller_fails_after is not None
            and self.controller_completions >= self.controller_fails_after
        ):
            status = "failed"
        elif status == "completed":
            self.controller_completions += 1
        return Scripted(tool="record_status", arguments={"step_status": status})

    def _control_starter(self, messages: list[dict[str, Any]]) -> Scripted:
        return Scripted(tool="record_status_starter", arguments={})

    def _terminator(self, messages: list[dict[str, Any]]) -> Scripted:
        return Scripted(tool="terminate_session", arguments={})

    # ---- engineer chain: code, its execution, the verdict ---------------------

    def _engineer(self, messages: list[dict[str, Any]]) -> Scripted:
        return Scripted(text=f"```python\n{self._code()}\n```")

    def _engineer_response_formatter(self, messages: list[dict[str, Any]]) -> Scripted:
        value = {
            "filename": "summary.py",
            "relative_path": "codebase",
            "code_explanation": "Writes a short result to data/result.txt.",
            "modification_summary": None,
            "python_code": self._code(),
        }
        return Scripted(json_value=value)

    def _executor_response_formatter(self, messages: list[dict[str, Any]]) -> Scripted:
        failed = "exitcode: 1" in (_last_text(messages) or "")
        args = {"next_agent_suggestion": "engineer" if failed else "control"}
        args["execution_status"] = "failure" if failed else "success"
        return Scripted(tool="post_execution_transfer", arguments=args)

    def _code(self) -> str:
        return (
            "import os\n"
            "os.makedirs('data', exist_ok=True)\n"
            "with open('data/result.txt', 'w') as f:\n"
            "    f.write('T_cmb = 2.7255 K\\n')\n"
            "print('T_cmb = 2.7255 K')"
        )

    # ---- planning ------------------------------------------------------------

    def _plan_setter(self, messages: list[dict[str, Any]]) -> Scripted:
        return Scripted(tool="record_plan_constraints", arguments={"needed_agents": [self.plan_agent]})

    def _planner(self, messages: list[dict[str, Any]]) -> Scripted:
        lines = [f"Step {i}: {self._sub_task(i)} (agent: {self.plan_agent})" for i in self._steps()]
        return Scripted(text="\n".join(lines))

    def _planner_response_formatter(self, messages: list[dict[str, Any]]) -> Scripted:
        sub_tasks = [
            {
                "sub_task": self._sub_task(i),
                "sub_task_agent": self.plan_agent,
                "bullet_points": [f"Write the notes of step {i} in markdown."],
            }
            for i in self._steps()
        ]
        # The maintained line's schema adds a per-step timeout (null: its default).
        timed = [{**sub_task, "code_execution_timeout": None} for sub_task in sub_tasks]
        return Scripted(json_value={"sub_tasks": sub_tasks}, json_alternatives=({"sub_tasks": timed},))

    def _plan_recorder(self, messages: list[dict[str, Any]]) -> Scripted:
        plan = _last_text(messages) or "Step 1"
        return Scripted(
            tool="record_plan",
            arguments={"plan_suggestion": plan, "number_of_steps_in_plan": self.plan_steps},
        )

    def _plan_reviewer(self, messages: list[dict[str, Any]]) -> Scripted:
        return Scripted(text="The plan is sound. Recommendation: cite the measurement.")

    def _reviewer_response_formatter(self, messages: list[dict[str, Any]]) -> Scripted:
        return Scripted(json_value={"recommendations": ["Cite the measurement."]})

    def _review_recorder(self, messages: list[dict[str, Any]]) -> Scripted:
        return Scripted(tool="record_review", arguments={"plan_review": "Cite the measurement."})

    def _steps(self) -> range:
        return range(1, self.plan_steps + 1)

    def _sub_task(self, step: int) -> str:
        return f"Summarise what is known (part {step})"


# ---- reading the conversation ------------------------------------------------


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _system(messages: list[dict[str, Any]]) -> str:
    return "\n".join(_text(m) for m in messages if m.get("role") in {"system", "developer"})


def _count_from(messages: list[dict[str, Any]], name: str) -> int:
    return sum(1 for m in messages if m.get("name") == name and m.get("role") != "tool")


def _last_from(messages: list[dict[str, Any]], name: str) -> str | None:
    for message in reversed(messages):
        if message.get("name") == name and _text(message):
            return _text(message)
    return None


def _last_text(messages: list[dict[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") not in {"system", "developer", "tool"} and _text(message):
            return _text(message)
    return None


def _last_human_instruction(messages: list[dict[str, Any]]) -> str | None:
    text = _last_from(messages, "admin")
    return text.strip() if text and text.strip() else None


def _work_since_last_status(messages: list[dict[str, Any]]) -> bool:
    """Did the step's agent produce anything since control last reported?"""
    workers = {"researcher", "researcher_response_formatter", "researcher_executor", "engineer", "executor"}
    for message in reversed(messages):
        if _is_status_call(message):
            return False
        if message.get("name") in workers:
            return True
    return False


def _last_status(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Arguments of the control agent's latest record_status call."""
    for message in reversed(messages):
        for call in reversed(message.get("tool_calls") or []):
            function = call.get("function", {})
            if function.get("name") == "record_status":
                try:
                    arguments: dict[str, Any] = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    return None
                return arguments
    return None


def _is_status_call(message: dict[str, Any]) -> bool:
    for call in message.get("tool_calls") or []:
        if call.get("function", {}).get("name") == "record_status":
            return True
    return False


def _int_after(text: str, marker: str, default: int) -> int:
    match = re.search(re.escape(marker) + r"\s*(\d+)", text)
    return int(match.group(1)) if match else default


def _word_after(text: str, marker: str) -> str | None:
    match = re.search(re.escape(marker) + r"\s*`?([A-Za-z_]+)", text)
    return match.group(1) if match else None


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
