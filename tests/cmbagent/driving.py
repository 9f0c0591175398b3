"""Drive a cmbagent task through a real gateway's REST API, as a user would:
open a session, submit, answer approvals as they come, read the events."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["FINAL", "Answer", "TaskRun", "run_task"]

FINAL = {"task.succeeded", "task.failed", "task.cancelled", "task.timed_out"}
#: decides an approval: (approval view) → (decision, text), or None to leave it open
Answer = Callable[[dict[str, Any]], tuple[str, str | None] | None]


@dataclass
class TaskRun:
    session_id: str
    task_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    approvals: list[dict[str, Any]] = field(default_factory=list)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type and e.get("task_id") == self.task_id]

    @property
    def final(self) -> dict[str, Any]:
        finals = [e for e in self.events if e["type"] in FINAL and e.get("task_id") == self.task_id]
        assert len(finals) == 1, finals
        return finals[0]


def submit(
    client: httpx.Client,
    mode: str,
    prompt: str,
    params: dict[str, Any],
    session_id: str | None = None,
    **extra: Any,
) -> TaskRun:
    """Submit a task, in a new session unless ``session_id`` is given."""
    if session_id is None:
        session = client.post("/api/sessions", json={"title": f"cmbagent {mode}", "mode": mode})
        session.raise_for_status()
        session_id = session.json()["id"]
    body = {"engine": "cmbagent", "mode": mode, "prompt": prompt, "params": params, **extra}
    task = client.post(f"/api/sessions/{session_id}/tasks", json=body)
    task.raise_for_status()
    return TaskRun(session_id, task.json()["id"])


def follow(client: httpx.Client, run: TaskRun, answer: Answer | None, timeout_s: float) -> TaskRun:
    """Poll events and pending approvals until the task's final event."""
    deadline = time.monotonic() + timeout_s
    after = run.events[-1]["seq"] if run.events else 0
    answered: set[str] = set()
    while time.monotonic() < deadline:
        page = client.get(f"/api/sessions/{run.session_id}/events", params={"after": after}).json()
        run.events.extend(page["items"])
        after = page["last_seq"]
        if any(e["type"] in FINAL and e.get("task_id") == run.task_id for e in run.events):
            return run
        if answer is not None:
            _answer_pending(client, run, answer, answered)
        time.sleep(0.2)
    kinds = [e["type"] for e in run.events]
    raise TimeoutError(f"task {run.task_id} did not finish in {timeout_s}s; events: {kinds}")


def _answer_pending(client: httpx.Client, run: TaskRun, answer: Answer, answered: set[str]) -> None:
    pending = client.get("/api/approvals", params={"status": "pending", "session_id": run.session_id})
    for approval in pending.json()["items"]:
        if approval["id"] in answered or approval["task_id"] != run.task_id:
            continue
        answered.add(approval["id"])
        chosen = answer(approval)
        if chosen is None:
            run.approvals.append({**approval, "answer": None, "answer_text": None})
            continue
        decision, text = chosen
        run.approvals.append({**approval, "answer": decision, "answer_text": text})
        body = {"decision": decision, "text": text}
        client.post(f"/api/approvals/{approval['id']}/resolve", json=body).raise_for_status()


def run_task(
    client: httpx.Client,
    mode: str,
    prompt: str,
    params: dict[str, Any],
    answer: Answer | None = None,
    timeout_s: float = 240.0,
    **extra: Any,
) -> TaskRun:
    return follow(client, submit(client, mode, prompt, params, **extra), answer, timeout_s)
