"""The CMBAgent workflow modes, as ``GET /api/modes`` lists them.

The ``cmbagent`` engine implements them; ``demo`` and ``script`` take any mode
as a label, so every mode lists those two engines as well.
"""

from __future__ import annotations

from typing import Final

from .api import ModeInfo

__all__ = ["MODES", "mode_names"]

_LABEL_ENGINES = ["demo", "script"]


def _mode(
    name: str, title: str, description: str, *, resume: bool, hitl: bool, utility: bool = False
) -> ModeInfo:
    return ModeInfo(
        name=name,
        title=title,
        description=description,
        engines=["cmbagent", *_LABEL_ENGINES],
        supports_resume=resume,
        human_in_the_loop=hitl,
        utility=utility,
    )


MODES: Final[list[ModeInfo]] = [
    _mode("one-shot", "One shot", "A single agent answers the task in one run.", resume=False, hitl=False),
    _mode(
        "planning-control",
        "Planning and control",
        "A planner drafts a multi-step plan, a human may review it, agents execute it step by step.",
        resume=True,
        hitl=True,
    ),
    _mode("control", "Control", "Execute a given plan step by step.", resume=True, hitl=False),
    _mode("copilot", "Copilot", "Interactive assistance on a research task.", resume=False, hitl=True),
    _mode(
        "hitl-interactive",
        "Human in the loop",
        "Agents ask a human for input at each turn.",
        resume=False,
        hitl=True,
    ),
    _mode(
        "idea-generation",
        "Idea generation",
        "Generate and critique research ideas.",
        resume=False,
        hitl=False,
    ),
    _mode("ocr", "OCR", "Extract text from documents.", resume=False, hitl=False, utility=True),
    _mode("arxiv", "arXiv", "Fetch and summarise papers.", resume=False, hitl=False, utility=True),
    _mode(
        "enhance-input",
        "Enhance input",
        "Rewrite a task prompt with context.",
        resume=False,
        hitl=False,
        utility=True,
    ),
]


def mode_names() -> list[str]:
    return [mode.name for mode in MODES]
