"""``cost.update`` events from the library's own cost records.

After every LLM call the AG2 fork appends one row (agent, model, cost,
prompt/completion tokens) to the calling agent's ``cost_dict``; cmbagent's
cost report is built from those rows. Wrapping the one method that appends
them turns each new row into a ``cost.update`` the moment it exists.

The row's numbers are the client's *running* totals, not the call's own
(``return_usage_summary`` sums everything since the client was created), so
the library's report counts an agent's earlier calls again each time it
speaks. The recorder takes the agent and model from the row and the tokens
and dollars from the difference of the client's totals around the call,
which adds up to what the provider billed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CostRecorder"]

Emit = Callable[[str, dict[str, Any]], None]


@dataclass
class CostRecorder:
    """Emits one ``cost.update`` per LLM call and keeps running totals."""

    emit: Emit
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    by_agent: dict[str, dict[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, row: dict[str, Any]) -> None:
        prompt = int(row.get("Prompt Tokens", 0) or 0)
        completion = int(row.get("Completion Tokens", 0) or 0)
        cost = max(0.0, float(row.get("Cost", 0.0) or 0.0))
        agent = str(row.get("Agent", "") or "")
        with self._lock:
            self.calls += 1
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            self.cost_usd += cost
            totals = self.by_agent.setdefault(
                agent, {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
            )
            totals["prompt_tokens"] += prompt
            totals["completion_tokens"] += completion
            totals["cost_usd"] += cost
            total_usd = self.cost_usd
        self.emit(
            "cost.update",
            {
                "agent": agent or None,
                "model": row.get("Model"),
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost_usd": cost,
                "total_cost_usd": round(total_usd, 8),
            },
        )

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self.calls,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 8),
            }

    def install(self, agent_class: Any) -> Callable[[], None]:
        """Wrap ``agent_class._generate_oai_reply_from_client``; returns the undo."""
        original = agent_class._generate_oai_reply_from_client
        recorder = self

        def generate(agent: Any, llm_client: Any, *args: Any, **kwargs: Any) -> Any:
            rows, usage = _rows(agent), _usage(llm_client)
            try:
                return original(agent, llm_client, *args, **kwargs)
            finally:
                for row in _new_rows(agent, rows):
                    recorder.record({**row, **_delta(usage, _usage(llm_client))})

        agent_class._generate_oai_reply_from_client = generate

        def undo() -> None:
            agent_class._generate_oai_reply_from_client = original

        return undo


def _usage(llm_client: Any) -> tuple[float, int, int]:
    """The client's running (cost, prompt tokens, completion tokens)."""
    summary = getattr(llm_client, "actual_usage_summary", None) or {}
    prompt = completion = 0
    for model, counts in summary.items():
        if model != "total_cost" and isinstance(counts, dict):
            prompt += int(counts.get("prompt_tokens", 0) or 0)
            completion += int(counts.get("completion_tokens", 0) or 0)
    return float(summary.get("total_cost", 0.0) or 0.0), prompt, completion


def _delta(before: tuple[float, int, int], after: tuple[float, int, int]) -> dict[str, Any]:
    if any(a < b for a, b in zip(after, before, strict=True)):
        before = (0.0, 0, 0)  # the client's totals were reset in between
    cost, prompt, completion = (a - b for a, b in zip(after, before, strict=True))
    return {"Cost": cost, "Prompt Tokens": int(prompt), "Completion Tokens": int(completion)}


def _rows(agent: Any) -> int:
    cost_dict = getattr(agent, "cost_dict", None) or {}
    return len(cost_dict.get("Cost", []))


def _new_rows(agent: Any, before: int) -> list[dict[str, Any]]:
    cost_dict: dict[str, list[Any]] = getattr(agent, "cost_dict", None) or {}
    count = len(cost_dict.get("Cost", []))
    columns = list(cost_dict)
    return [
        {column: cost_dict[column][i] for column in columns if i < len(cost_dict[column])}
        for i in range(before, count)
    ]
