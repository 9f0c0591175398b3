"""Turn AG2's IOStream events into cmbtask events.

AG2 sends every chat event as ``event.model_dump()`` →
``{"type": "text" | "tool_call" | …, "content": {sender, recipient, …}}``.
This module is pure (dicts in, ``(event_type, data)`` out) so the mapping is
unit-tested without the library. It keeps a little state: the code blocks of
the last message (emitted as ``code`` once an executor runs them) and the
plan step the control agent reported last (for ``step.*`` events).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EventMapper", "Mapped", "code_blocks"]

Mapped = tuple[str, dict[str, Any]]

MAX_CONTENT = 200_000
_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_FILENAME = re.compile(r"^\s*(?:#|<!--|//)\s*filename:\s*([^\s>]+)")
#: AG2's helper agents whose names mean nothing to a user (post63 names its group manager)
_ALIASES = {
    "_User": "user",
    "_Group_Tool_Executor": "tools",
    "chat_manager": "group",
    "main_cmbagent_chat": "group",
}


def _name(value: Any) -> str:
    text = str(value or "")
    return _ALIASES.get(text, text)[:200]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value[:MAX_CONTENT]
    return json.dumps(value, default=str)[:MAX_CONTENT]


def code_blocks(text: str) -> list[dict[str, Any]]:
    """Fenced blocks of ``text`` as ``code`` payloads (language, source, filename)."""
    blocks: list[dict[str, Any]] = []
    for match in _FENCE.finditer(text):
        source = match.group(2).rstrip("\n")
        block: dict[str, Any] = {"language": match.group(1) or "text", "source": source[:MAX_CONTENT]}
        first = source.splitlines()[0] if source else ""
        named = _FILENAME.match(first)
        if named:
            block["filename"] = named.group(1)
        blocks.append(block)
    return blocks


def _arguments(raw: Any) -> dict[str, Any] | str:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return _text(raw)
    return value if isinstance(value, dict) else _text(raw)


@dataclass
class EventMapper:
    """Stateful translator; one per task."""

    #: number of plan steps when known (planning-control, control); else inferred
    total_steps: int | None = None
    #: steps of the plan done before this run (a resumed session)
    step_offset: int = 0
    #: steps come from the library's own step loop (adapters.step_reports), not record_status
    library_steps: bool = False
    _pending_code: list[dict[str, Any]] = field(default_factory=list)
    _started: set[int] = field(default_factory=set)
    _finished: set[int] = field(default_factory=set)

    def map(self, event: dict[str, Any]) -> list[Mapped]:
        kind = str(event.get("type", ""))
        content = event.get("content")
        if not isinstance(content, dict):
            return []
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            return []
        mapped: list[Mapped] = handler(content)
        return mapped

    # ---- chat messages ---------------------------------------------------------------

    def _on_text(self, content: dict[str, Any]) -> list[Mapped]:
        text = _text(content.get("content"))
        agent = _name(content.get("sender"))
        self._pending_code = [{**block, "agent": agent} for block in code_blocks(text)]
        if not text.strip():
            return []
        data = {"agent": agent, "recipient": _name(content.get("recipient")), "content": text}
        if text.startswith("Execution results:") or "exitcode:" in text[:200]:
            data["kind"] = "execution_result"
        return [("agent.message", data)]

    def _on_generate_code_execution_reply(self, content: dict[str, Any]) -> list[Mapped]:
        # The executor is about to run the blocks of the message just before.
        blocks, self._pending_code = self._pending_code, []
        return [("code", block) for block in blocks]

    def _on_tool_call(self, content: dict[str, Any]) -> list[Mapped]:
        agent = _name(content.get("sender"))
        mapped: list[Mapped] = []
        for call in content.get("tool_calls") or []:
            function = call.get("function") or {}
            data = {
                "agent": agent,
                "tool": str(function.get("name") or "?")[:200],
                "arguments": _arguments(function.get("arguments")),
                "call_id": call.get("id"),
            }
            mapped.append(("agent.tool_call", data))
        return mapped

    def _on_tool_response(self, content: dict[str, Any]) -> list[Mapped]:
        text = _text(content.get("content"))
        if not text.strip():
            return []
        data = {"agent": "tools", "recipient": _name(content.get("recipient")), "content": text}
        return [("agent.message", {**data, "kind": "tool_response"})]

    def _on_termination(self, content: dict[str, Any]) -> list[Mapped]:
        reason = _text(content.get("termination_reason"))
        return [("output", {"stream": "log", "level": "info", "text": f"chat ended: {reason}"})]

    # ---- plan steps, from the control agent's record_status calls ----------------------

    def _on_execute_function(self, content: dict[str, Any]) -> list[Mapped]:
        if content.get("func_name") != "record_status" or self.library_steps:
            return []
        arguments = _arguments(content.get("arguments"))
        if not isinstance(arguments, dict):
            return []
        try:
            step = max(1, int(arguments.get("current_plan_step_number") or 1)) + self.step_offset
        except (TypeError, ValueError):
            return []
        # upstream names the status current_status; the maintained line, step_status
        status = arguments.get("current_status") or arguments.get("step_status") or ""
        return self._step_status(step, str(status), arguments)

    def _step_status(self, step: int, status: str, arguments: dict[str, Any]) -> list[Mapped]:
        total = max(self.total_steps or step, step)
        title = str(arguments.get("current_sub_task", ""))[:2000]
        agent = arguments.get("agent_for_sub_task")
        mapped: list[Mapped] = []
        if step not in self._started:
            self._started.add(step)
            started = {"step": step, "total": total, "title": title, "agent": agent}
            mapped.append(("step.started", started))
        if "completed" in status and step not in self._finished:
            self._finished.add(step)
            mapped.append(("step.completed", {"step": step, "total": total, "summary": title}))
        elif "failed" in status and step not in self._finished:
            mapped.append(("step.failed", {"step": step, "total": total, "error": title}))
        return mapped

    def library_step(self, step: int, context: dict[str, Any], final: dict[str, Any] | None) -> list[Mapped]:
        """A step of the library's own loop: starting (``final`` None) or ended,
        with the status its control agent left in the final context."""
        self.library_steps = True
        arguments = {"current_sub_task": context.get("current_sub_task", ""),
                     "agent_for_sub_task": context.get("agent_for_sub_task")}  # fmt: skip
        status = "" if final is None else str(final.get("step_status") or "failed")
        if final is not None and status == "in progress":
            status = "failed"  # the chat ended (round limit) before the step did
        return self._step_status(step + self.step_offset, status, arguments)

    @property
    def completed_steps(self) -> list[int]:
        return sorted(self._finished)
