"""The ``demo`` engine: a deterministic planning-and-control workflow, no LLM.

It walks the same path a CMBAgent planning-and-control run does — a plan, an
optional human review of it, steps run by named agents that talk, write code,
print output and spend tokens, checkpoints after each step — so that newcomers
can watch the whole system work and load tests can drive it at any size.
Its output lines are written to the process's own stdout on purpose, as a
task's program would: they exercise the runner's output capture.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from cmbtask_protocol import DemoParams, EventType, TaskSpec

from . import parse_params
from .base import ApprovalOutcome, EngineContext, EngineError, TaskCancelled

__all__ = ["DemoEngine"]

_AGENTS = ("planner", "engineer", "researcher", "executor")
_TITLES = (
    "Load the CMB power spectra",
    "Fit the cosmological parameters",
    "Compare with the Planck baseline",
    "Plot the residuals",
    "Write up the findings",
)


def _plan(total: int) -> list[dict[str, Any]]:
    return [
        {
            "title": f"{_TITLES[(k - 1) % len(_TITLES)]} (step {k})",
            "agent": _AGENTS[1 + (k - 1) % (len(_AGENTS) - 1)],
            "description": f"Demo step {k} of {total}.",
        }
        for k in range(1, total + 1)
    ]


def _who(outcome: ApprovalOutcome) -> str:
    if outcome.resolved_by:
        return outcome.resolved_by
    return f"timeout policy ({outcome.on_timeout.value})" if outcome.on_timeout else "nobody"


class DemoEngine:
    name: ClassVar[str] = "demo"

    def validate(self, task: TaskSpec) -> None:
        parse_params(DemoParams, task.params)

    def run(self, ctx: EngineContext) -> dict[str, Any] | None:
        params = parse_params(DemoParams, ctx.task.params)
        plan = _plan(params.steps)
        state = ctx.load_state() or {}
        done = min(int(state.get("completed_steps", 0)), params.steps)
        ctx.emit(EventType.PLAN_PROPOSED, {"steps": plan, "resumed_after_step": done})
        if params.approve_plan and done == 0:
            self._approve_plan(ctx, plan)
        for step in range(done + 1, params.steps + 1):
            self._run_step(ctx, params, plan, step)
        return {"completed_steps": params.steps, "resumed_after_step": done}

    def _approve_plan(self, ctx: EngineContext, plan: list[dict[str, Any]]) -> None:
        outcome = ctx.request_approval(
            f"Approve this plan of {len(plan)} steps?", kind="plan", context={"steps": plan}
        )
        if not outcome.approved:
            raise EngineError(f"plan rejected by {_who(outcome)}")

    def _run_step(
        self, ctx: EngineContext, params: DemoParams, plan: list[dict[str, Any]], step: int
    ) -> None:
        if ctx.cancelled.is_set():  # stopped in the previous step (a cancel, a crossed budget)
            raise TaskCancelled("cancelled")
        total, title, agent = params.steps, plan[step - 1]["title"], plan[step - 1]["agent"]
        if step in params.approve_steps:
            outcome = ctx.request_approval(f"Run step {step}: {title}?", kind="step", context={"step": step})
            if not outcome.approved:
                raise EngineError(f"step {step} rejected by {_who(outcome)}")
        ctx.emit(EventType.STEP_STARTED, {"step": step, "total": total, "title": title, "agent": agent})
        if params.chatter:
            self._chatter(ctx, step, agent)
        tag = ctx.task.id
        for line in range(1, params.lines_per_step + 1):
            # The task's own stdout, which the runner captures into output events.
            sys.stdout.write(f"[{tag}] step {step}/{total} line {line}/{params.lines_per_step}\n")
        ctx.emit(
            EventType.STEP_PROGRESS,
            {"step": step, "total": total, "fraction": 0.5, "message": "output written"},
        )
        _wait(ctx, params.step_delay_s)
        if params.fail_at_step == step:
            ctx.emit(EventType.STEP_FAILED, {"step": step, "total": total, "error": "failure injected"})
            raise EngineError(f"step {step} failed (fail_at_step={step})")
        if params.chatter:
            ctx.emit(
                EventType.COST_UPDATE,
                {
                    "agent": agent,
                    "model": "demo",
                    "prompt_tokens": 100 * step,
                    "completion_tokens": 40 * step,
                    "cost_usd": params.cost_usd_per_step,
                },
            )
        ctx.emit(EventType.STEP_COMPLETED, {"step": step, "total": total, "summary": f"{title}: done"})
        if params.checkpoint:
            ctx.save_state(
                {"completed_steps": step, "total_steps": total, "engine": "demo"}, checkpoint=f"step-{step}"
            )

    def _chatter(self, ctx: EngineContext, step: int, agent: str) -> None:
        ctx.emit(
            EventType.AGENT_MESSAGE,
            {"agent": "planner", "recipient": agent, "content": f"Please carry out step {step}."},
        )
        ctx.emit(EventType.AGENT_MESSAGE, {"agent": agent, "recipient": "planner", "content": "On it."})
        ctx.emit(
            EventType.CODE,
            {
                "language": "python",
                "agent": agent,
                "filename": f"step_{step}.py",
                "source": f"for line in range(3):\n    print('step {step}', line)\n",
            },
        )


def _wait(ctx: EngineContext, seconds: float) -> None:
    """Sleep, but wake up at once when the task is cancelled."""
    if seconds > 0 and ctx.cancelled.wait(seconds):
        raise TaskCancelled("cancelled")
    if ctx.cancelled.is_set():
        raise TaskCancelled("cancelled")
