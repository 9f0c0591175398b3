"""Task params of the ``cmbagent`` engine, the same for every supported release."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CmbAgentParams", "PlanStepSpec"]

_TEXT = 20_000


class PlanStepSpec(BaseModel):
    """One step of a plan, in cmbagent's own ``final_plan.json`` shape."""

    model_config = ConfigDict(extra="forbid")

    sub_task: str = Field(min_length=1, max_length=_TEXT)
    sub_task_agent: Literal["engineer", "researcher", "idea_maker", "idea_hater"] = "engineer"
    bullet_points: list[str] = Field(default_factory=list, max_length=100)


class CmbAgentParams(BaseModel):
    """Task params of the ``cmbagent`` engine. Models and API keys are not
    params on purpose: they come from the deployment's environment."""

    model_config = ConfigDict(extra="forbid")

    #: the agent that answers in one-shot and hitl-interactive
    agent: Literal["engineer", "researcher"] = "engineer"
    #: chat rounds of a workflow (of the control phase in planning-control)
    max_rounds: int = Field(default=50, ge=1, le=1000)
    max_rounds_planning: int = Field(default=50, ge=1, le=1000)
    max_n_attempts: int = Field(default=3, ge=1, le=20)
    max_plan_steps: int = Field(default=3, ge=1, le=20)
    n_plan_reviews: int = Field(default=1, ge=0, le=5)
    #: ask a human to approve the plan before control runs it
    review_plan: bool = True
    #: how often a plan may be sent back with changes before the task fails
    max_plan_revisions: int = Field(default=3, ge=0, le=10)
    plan_instructions: str = Field(default="", max_length=_TEXT)
    engineer_instructions: str = Field(default="", max_length=_TEXT)
    researcher_instructions: str = Field(default="", max_length=_TEXT)
    hardware_constraints: str = Field(default="", max_length=_TEXT)
    #: the plan to execute in ``control`` mode
    plan: list[PlanStepSpec] | None = Field(default=None, min_length=1, max_length=20)
    #: files above this size are not announced as ``file.created``
    max_file_bytes: int = Field(default=50 * 1024 * 1024, ge=0, le=1024**3)
    #: read by the runner's output capture: lines per second above which output is dropped
    max_output_lines_per_s: int = Field(default=5000, ge=1, le=1_000_000)

    def plan_dicts(self) -> list[dict[str, Any]]:
        return [step.model_dump() for step in self.plan or []]
