"""The CMBAgent workflows, one function per mode, on an already set-up run.

``Run.function`` is the library function ``modes.MODES`` chose for the
task's mode in the installed release. ``planning-control`` is split in two
so a human can review the plan: the planning phase of
``planning_and_control_context_carryover`` (neither supported release has a
planning-only entry point, so its few lines are repeated here with the same
arguments), then the library's ``control`` on the approved plan. A session's
state remembers the approved plan and how many of its steps completed, so a
later task of the session resumes after the last one.

Work dirs are passed as ``Path``: 0.0.1.post63's ``CMBAgent`` calls
``work_dir.resolve()`` (a ``str`` fails there in ``human_in_the_loop``), and
0.0.1.post30 takes either."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from cmbtask_protocol import Decision

from ..base import EngineContext, EngineError
from . import deep_research
from .library import model_config, model_kwargs, supported_kwargs
from .mapping import EventMapper
from .params import CmbAgentParams

__all__ = ["Run", "control", "copilot", "hitl_interactive", "one_shot", "planning_control"]

STATE_KIND = "cmbagent.planning-control"


@dataclass
class Run:
    """Everything a workflow needs: the task, the library, where to write."""

    ctx: EngineContext
    params: CmbAgentParams
    lib: ModuleType
    root: Path
    mapper: EventMapper
    #: the library function that runs the mode (see modes.py)
    function: Callable[..., Any]
    #: what the session's state keeps besides the plan (deep_research.py)
    carry: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return self.ctx.task.prompt


def one_shot(run: Run) -> dict[str, Any]:
    p = run.params
    run.mapper.total_steps = 1
    kwargs = model_kwargs(run.function, run.lib.utils)
    run.function(
        run.prompt, agent=p.agent, max_rounds=p.max_rounds, max_n_attempts=p.max_n_attempts,
        work_dir=run.root, **kwargs,
    )  # fmt: skip
    return {}


def hitl_interactive(run: Run) -> dict[str, Any]:
    p = run.params
    kwargs = model_kwargs(run.function, run.lib.utils)
    run.function(
        run.prompt, work_dir=run.root, max_rounds=p.max_rounds, max_n_attempts=p.max_n_attempts,
        agent=p.agent, **kwargs,
    )  # fmt: skip
    return {}


def copilot(run: Run) -> dict[str, Any]:
    """A release's ``copilot``. No supported release has one (see modes.py), so
    its signature is unknown: of the parameters the library's workflows share,
    it gets those it names. Its human turns reach the task through the
    IOStream, as in ``hitl-interactive``."""
    p = run.params
    common = supported_kwargs(
        run.function, work_dir=run.root, max_rounds=p.max_rounds, max_n_attempts=p.max_n_attempts,
        agent=p.agent, engineer_instructions=p.engineer_instructions,
        researcher_instructions=p.researcher_instructions, hardware_constraints=p.hardware_constraints,
    )  # fmt: skip
    run.function(run.prompt, **common, **model_kwargs(run.function, run.lib.utils))
    return {}


def control(run: Run) -> dict[str, Any]:
    steps = run.params.plan_dicts()
    if not steps:
        raise EngineError(
            "control mode needs params.plan: a list of {sub_task, sub_task_agent, bullet_points}"
        )
    _propose(run, steps)
    _control(run, steps, offset=0)
    return {"steps": len(steps)}


def planning_control(run: Run) -> dict[str, Any]:
    state = run.ctx.load_state() or {}
    if state.get("kind") == STATE_KIND and state.get("plan"):
        steps: list[dict[str, Any]] = list(state["plan"])
        done = int(state.get("completed_steps", 0))
        if done >= len(steps):
            raise EngineError("this session's plan is already complete; start a new session to plan again")
    else:
        steps, done = _reviewed_plan(run), 0
        _save(run, steps, 0, "plan approved")
    try:
        if deep_research.runs_here(run.lib, run.function):
            deep_research.control(run, steps, offset=done)
        else:
            _control(run, steps, offset=done)
    finally:
        completed = min(done + _done_in_order(run.mapper.completed_steps, done), len(steps))
        if completed > done:
            _save(run, steps, completed, f"step {completed} completed")
    if completed < len(steps):
        # The chat ended (round limit, agents gave up) before the plan did.
        raise EngineError(
            f"the plan stopped after step {completed} of {len(steps)}; "
            f"a new planning-control task in this session continues from step {completed + 1}"
        )
    return {"steps": len(steps), "resumed_after_step": done}


def _done_in_order(completed: list[int], done: int) -> int:
    """How many steps after ``done`` completed without a gap (a step that did
    not complete stops the count, even if the library went on to the next)."""
    count = 0
    while done + count + 1 in completed:
        count += 1
    return count


# ---- planning --------------------------------------------------------------------------


def _reviewed_plan(run: Run) -> list[dict[str, Any]]:
    """Plan, show, and re-plan with the reviewer's changes until approved."""
    instructions = run.params.plan_instructions
    for revision in range(run.params.max_plan_revisions + 1):
        maintained = deep_research.runs_here(run.lib, run.function)
        steps = (deep_research.plan if maintained else _plan)(run, instructions, revision)
        _propose(run, steps)
        if not run.params.review_plan:
            return steps
        outcome = run.ctx.request_approval(
            _plan_text(steps),
            kind="plan",
            options=(Decision.APPROVE, Decision.MODIFY, Decision.REJECT),
            allow_text=True,
            context={"steps": steps, "revision": revision},
        )
        if outcome.decision is Decision.MODIFY and outcome.text and outcome.text.strip():
            instructions = f"{instructions}\nChanges requested by the reviewer: {outcome.text.strip()}"
            continue
        if not outcome.approved:
            raise EngineError(f"plan rejected by {outcome.resolved_by or 'timeout policy'}")
        return steps
    raise EngineError(f"the plan was sent back more than {run.params.max_plan_revisions} times")


def _plan(run: Run, instructions: str, revision: int) -> list[dict[str, Any]]:
    p, lib = run.params, run.lib
    core, utils = lib.cmbagent, lib.utils
    models = model_kwargs(run.function, utils)
    planning_dir = run.root / ("planning" if revision == 0 else f"planning_{revision}")
    planning_dir.mkdir(parents=True, exist_ok=True)
    # What post63's planning phase also hands CMBAgent; post30's has neither.
    newer: dict[str, Any] = {}
    if "default_formatter_model" in models:
        newer["default_formatter_model"] = models["default_formatter_model"]
    if hasattr(utils, "get_api_keys_from_env"):
        newer["api_keys"] = utils.get_api_keys_from_env()
    agent = core.CMBAgent(
        work_dir=planning_dir,
        agent_llm_configs={
            "planner": model_config(utils, models["planner_model"]),
            "plan_reviewer": model_config(utils, models["plan_reviewer_model"]),
        },
        **supported_kwargs(core.CMBAgent, **newer),
    )
    agent.solve(
        run.prompt,
        max_rounds=p.max_rounds_planning,
        initial_agent="plan_setter",
        shared_context={
            "feedback_left": p.n_plan_reviews,
            "max_n_attempts": p.max_n_attempts,
            "maximum_number_of_steps_in_plan": p.max_plan_steps,
            "planner_append_instructions": instructions,
            "engineer_append_instructions": p.engineer_instructions,
            "researcher_append_instructions": p.researcher_instructions,
            "plan_reviewer_append_instructions": instructions,
            "hardware_constraints": p.hardware_constraints,
        },
    )
    if not hasattr(agent, "groupchat"):  # as the library does, so display_cost works
        agent.groupchat = type("Dummy", (), {"new_conversable_agents": []})()
    agent.display_cost()
    outfile = core.save_final_plan(agent.final_context, planning_dir)
    steps: list[dict[str, Any]] = json.loads(Path(outfile).read_text(encoding="utf-8"))["sub_tasks"]
    if not steps:
        raise EngineError("the planner produced an empty plan")
    return steps


def _propose(run: Run, steps: list[dict[str, Any]]) -> None:
    run.mapper.total_steps = len(steps)
    run.ctx.emit(
        "plan.proposed",
        {
            "steps": [
                {
                    "title": str(step.get("sub_task", ""))[:2000],
                    "agent": step.get("sub_task_agent"),
                    "description": "\n".join(f"- {b}" for b in step.get("bullet_points", []))[:20_000],
                }
                for step in steps
            ]
        },
    )


def _plan_text(steps: list[dict[str, Any]]) -> str:
    lines = ["Run this plan?"]
    for number, step in enumerate(steps, 1):
        lines.append(f"{number}. [{step.get('sub_task_agent')}] {step.get('sub_task')}")
        lines.extend(f"   - {bullet}" for bullet in step.get("bullet_points", []))
    return "\n".join(lines)


# ---- control ---------------------------------------------------------------------------


def _control(run: Run, steps: list[dict[str, Any]], *, offset: int) -> None:
    """Run the library's ``control`` on the steps after ``offset``."""
    p, lib = run.params, run.lib
    remaining = steps[offset:]
    run.mapper.total_steps = len(steps)
    run.mapper.step_offset = offset
    plan_path = run.root / f"plan_from_step_{offset + 1}.json"
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps({"sub_tasks": remaining}, indent=2), encoding="utf-8")
    kwargs = model_kwargs(lib.control, lib.utils)
    lib.control(
        run.prompt, plan=str(plan_path), max_rounds=p.max_rounds, max_plan_steps=len(remaining),
        n_plan_reviews=p.n_plan_reviews, plan_instructions=p.plan_instructions,
        engineer_instructions=p.engineer_instructions, researcher_instructions=p.researcher_instructions,
        hardware_constraints=p.hardware_constraints, max_n_attempts=p.max_n_attempts,
        work_dir=run.root, **kwargs,
    )  # fmt: skip


def _save(run: Run, steps: list[dict[str, Any]], completed: int, checkpoint: str) -> None:
    state = run.ctx.load_state() or {}
    state.update({**run.carry, "kind": STATE_KIND, "plan": steps, "completed_steps": completed})
    run.ctx.save_state(state, checkpoint=checkpoint)
