"""``planning-control`` on the maintained line (mars-cmbagent), whose
``deep_research`` does both phases itself and exports no ``control``.

- Planning: ``deep_research(…, planning_only=True)`` writes the plan
  (``planning/final_plan.json``) and the context the control phase starts
  from, and returns that context.
- Control: ``deep_research(…, restart_at_step=1)`` on the same work dir runs
  the plan's steps from that context; it re-reads the plan file, so the plan
  the reviewer approved (or the steps a resumed session has left) is what
  runs.

A later task of the session resumes in a new work dir: the plan's remaining
steps and the planning context (kept, JSON-safe, in the session's state) are
laid down as the library's restart expects, and the steps are numbered on
from where the session stopped (``mapper.step_offset``).
"""

from __future__ import annotations

import importlib
import json
import math
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import EngineError
from .library import model_kwargs

if TYPE_CHECKING:
    from .workflows import Run

__all__ = ["CONTEXT_KEY", "control", "json_safe", "plan", "runs_here"]

#: where the session's state keeps the planning context
CONTEXT_KEY = "library_context"


def runs_here(lib: Any, function: Any) -> bool:
    """Whether this release needs this path: no ``control``, and a
    ``deep_research`` that plans alone and restarts at a step."""
    from .library import parameters_of

    parameters = parameters_of(function)
    return not hasattr(lib, "control") and {"planning_only", "restart_at_step"} <= set(parameters)


def plan(run: Run, instructions: str, revision: int) -> list[dict[str, Any]]:
    p = run.params
    context = run.function(
        run.prompt, planning_only=True, work_dir=run.root, max_rounds_planning=p.max_rounds_planning,
        max_plan_steps=p.max_plan_steps, n_plan_reviews=p.n_plan_reviews, plan_instructions=instructions,
        engineer_instructions=p.engineer_instructions, researcher_instructions=p.researcher_instructions,
        hardware_constraints=p.hardware_constraints, max_n_attempts=p.max_n_attempts,
        **model_kwargs(run.function, run.lib.utils),
    )  # fmt: skip
    run.carry[CONTEXT_KEY] = json_safe(dict(context or {}))
    steps: list[dict[str, Any]] = json.loads(_plan_file(run.root).read_text(encoding="utf-8"))["sub_tasks"]
    if not steps:
        raise EngineError("the planner produced an empty plan")
    return steps


def control(run: Run, steps: list[dict[str, Any]], *, offset: int) -> None:
    p = run.params
    context = run.carry.get(CONTEXT_KEY)
    if context is None:
        context = (run.ctx.load_state() or {}).get(CONTEXT_KEY)
        if not isinstance(context, dict):
            raise EngineError("this session's plan has no planning context to resume from; plan again")
        run.carry[CONTEXT_KEY] = context
    remaining = steps[offset:]
    _lay_down(run.root, remaining, context)
    run.mapper.total_steps = len(steps)
    run.mapper.step_offset = offset
    run.function(
        run.prompt, restart_at_step=1, work_dir=run.root, max_rounds_control=p.max_rounds,
        max_plan_steps=len(remaining), max_n_attempts=p.max_n_attempts,
        engineer_instructions=p.engineer_instructions, researcher_instructions=p.researcher_instructions,
        hardware_constraints=p.hardware_constraints, **model_kwargs(run.function, run.lib.utils),
    )  # fmt: skip


def _plan_file(root: Path) -> Path:
    return root / "planning" / "final_plan.json"


def _lay_down(root: Path, steps: list[dict[str, Any]], context: dict[str, Any]) -> None:
    """The plan file and step-0 context that ``restart_at_step=1`` reads."""
    _plan_file(root).parent.mkdir(parents=True, exist_ok=True)
    _plan_file(root).write_text(json.dumps({"sub_tasks": steps}, indent=2), encoding="utf-8")
    contexts = root / "context"
    contexts.mkdir(parents=True, exist_ok=True)
    start = {**context, "number_of_steps_in_plan": len(steps)}
    if "work_dir" in start:  # where planning ran: this task's, not an earlier task's
        start["work_dir"] = str(_plan_file(root).parent)
    # The library pickles AG2's ContextVariables there; it reads either that or a dict.
    variables = getattr(importlib.import_module("autogen.agentchat.group"), "ContextVariables", None)
    with (contexts / "context_step_0.pkl").open("wb") as out:
        pickle.dump(variables(data=start) if variables is not None else start, out)


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with what JSON cannot hold left out (the library's context
    carries data frames and AG2 objects that the next step rebuilds)."""
    if depth > 20:
        return None
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        kept = {str(k): json_safe(v, depth + 1) for k, v in value.items() if _plain(v)}
        return kept
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value if _plain(v)]
    return None


def _plain(value: Any) -> bool:
    return isinstance(value, str | bool | int | float | dict | list | tuple) or value is None
