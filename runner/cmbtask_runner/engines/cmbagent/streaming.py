"""The IOStream a task's chat talks to: events out, human input in.

AG2 routes every chat event through ``IOStream.get_default().send`` and every
human prompt through ``.input``. Installing this stream (scoped, with
``IOStream.set_default``) is how the engine sees the run without parsing
console text. Plain ``print`` calls of the library still go to stdout, where
the runner's fd capture turns them into ``output`` events.

Human input becomes an approval with three options:

- approve → "continue": an empty answer, which lets the chat go on;
- answer (with text) → "give instructions": the text goes to the agents;
  typing ``exit`` ends the chat as it does on a console;
- reject → "abort": the task ends as cancelled.

An expired approval follows the task's ``on_timeout`` policy: ``approve``
continues, ``reject`` ends the chat, ``fail`` fails the task.
"""

from __future__ import annotations

import sys
from typing import Any

import structlog
from cmbtask_protocol import ApprovalStatus, Decision

from ..base import EngineContext, TaskCancelled
from .mapping import EventMapper

__all__ = ["EXIT", "TaskIOStream", "answer_for"]

log = structlog.get_logger("cmbtask_runner.engines.cmbagent")

EXIT = "exit"
INPUT_OPTIONS = (Decision.APPROVE, Decision.ANSWER, Decision.REJECT)
OPTION_LABELS = {"approve": "continue", "answer": "give instructions", "reject": "abort"}
_PROMPT_CONTEXT_CHARS = 4000


def answer_for(status: ApprovalStatus, decision: Decision | None, text: str | None, approved: bool) -> str:
    """What to hand back to ``get_human_input`` for an approval's outcome."""
    if status is ApprovalStatus.EXPIRED:
        return "" if approved else EXIT
    if decision is Decision.REJECT:
        raise TaskCancelled("aborted at the human-input prompt")
    answer = (text or "").strip()
    if decision in {Decision.ANSWER, Decision.MODIFY} and answer:
        return EXIT if answer.lower() == EXIT else answer
    return ""


class TaskIOStream:
    """AG2 ``IOStreamProtocol`` bound to one task's context."""

    def __init__(self, ctx: EngineContext, mapper: EventMapper) -> None:
        self.ctx = ctx
        self.mapper = mapper
        self.last_message = ""
        self.inputs = 0

    def _check_cancelled(self) -> None:
        # Raising here unwinds the chat at its next event: AG2 has no other stop.
        if self.ctx.cancelled.is_set():
            raise TaskCancelled("cancelled")

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        self._check_cancelled()
        sys.stdout.write(sep.join(str(obj) for obj in objects) + end)
        if flush:
            sys.stdout.flush()

    def send(self, message: Any) -> None:
        self._check_cancelled()
        dumped = _dump(message)
        if dumped is None:
            return
        for event_type, data in self.mapper.map(dumped):
            if event_type == "agent.message":
                self.last_message = str(data.get("content", ""))
            self.ctx.emit(event_type, data)

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        self._check_cancelled()
        self.inputs += 1
        context = {
            "agent_prompt": prompt,
            "last_message": self.last_message[-_PROMPT_CONTEXT_CHARS:],
            "option_labels": OPTION_LABELS,
            "turn": self.inputs,
        }
        question = prompt.strip() or "The agents wait for your input."
        outcome = self.ctx.request_approval(
            f"{question}\n(continue: let the agents go on · give instructions: type them · "
            f"type 'exit' to end the chat · abort: stop the task)",
            kind="input",
            options=INPUT_OPTIONS,
            allow_text=True,
            context=context,
        )
        answer = answer_for(outcome.status, outcome.decision, outcome.text, outcome.approved)
        log.info("cmbagent.human_input", turn=self.inputs, ends_chat=answer == EXIT, empty=answer == "")
        return answer


def _dump(message: Any) -> dict[str, Any] | None:
    """The event as plain data; JSON mode first, Python mode if a field resists."""
    for mode in ("json", "python"):
        try:
            dumped: dict[str, Any] = message.model_dump(mode=mode)
            return dumped
        except Exception:  # an event AG2 cannot serialise is not worth failing the task for
            continue
    log.warning("cmbagent.event_unserialisable", event=type(message).__name__)
    return None
