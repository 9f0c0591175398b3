"""A task's spending limits, enforced where the spending is seen: in the runner.

Every ``cost.update`` an engine emits passes through :meth:`Budget.charge`
before it is sent. The budget prices the call from the one price table (the
task owner's overrides over ``DEFAULT_PRICES``; a model in neither keeps the
dollars its engine reported), adds it to the task's totals, writes the totals
and limits into the event so that every viewer sees spend against budget, and
says when a limit has been crossed. The runner then stops the workflow and
ends the task ``failed`` with that reason; its work directory stays.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from cmbtask_protocol import DEFAULT_PRICES, ModelPrice, TaskSpec

__all__ = ["Budget"]


@dataclass
class Budget:
    max_cost_usd: float | None = None
    max_tokens: int | None = None
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    cost_usd: float = 0.0
    tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_task(cls, task: TaskSpec) -> Budget:
        return cls(task.max_cost_usd, task.max_tokens, {**DEFAULT_PRICES, **task.prices})

    def charge(self, data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The ``cost.update`` payload to send, and why the task must stop (or None)."""
        prompt = int(data.get("prompt_tokens") or 0)
        completion = int(data.get("completion_tokens") or 0)
        price = self.prices.get(str(data.get("model") or ""))
        cost = price.cost_usd(prompt, completion) if price else float(data.get("cost_usd") or 0.0)
        with self._lock:
            self.cost_usd += cost
            self.tokens += prompt + completion
            totals = {"total_cost_usd": round(self.cost_usd, 8), "total_tokens": self.tokens}
            over = self._exceeded()
        limits = {"max_cost_usd": self.max_cost_usd, "max_tokens": self.max_tokens}
        priced = {**data, "cost_usd": round(cost, 8), **totals}
        return {**priced, **{k: v for k, v in limits.items() if v is not None}}, over

    def _exceeded(self) -> str | None:
        if self.max_cost_usd is not None and self.cost_usd > self.max_cost_usd:
            return f"budget exceeded: ${self.cost_usd:.2f} of ${self.max_cost_usd:.2f}"
        if self.max_tokens is not None and self.tokens > self.max_tokens:
            return f"budget exceeded: {self.tokens:,} tokens of {self.max_tokens:,}"
        return None

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "cost_usd": round(self.cost_usd, 8),
                "tokens": self.tokens,
                "max_cost_usd": self.max_cost_usd,
                "max_tokens": self.max_tokens,
            }
