"""Which cmbtask mode runs which CMBAgent workflow: the one table that knows
the library's entry points, and the one place that decides, per installed
release, which modes it can run.

Written against ``cmbagent==0.0.1.post30`` (the newest release for Python
3.11) and ``0.0.1.post63`` (Python 3.12+):

================  ===========================================  ======  ======  ======
mode              cmbagent function                             post30  post63  human
================  ===========================================  ======  ======  ======
one-shot          ``one_shot(task, agent=…)``                   yes     yes     no
planning-control  planning phase of                             yes     yes     plan
                  ``planning_and_control_context_carryover``                    review
                  (post63 also names it ``deep_research``),
                  then ``control(task, plan=approved plan)``
control           ``control(task, plan=…)``                     yes     yes     no
hitl-interactive  ``human_in_the_loop(task, agent=…)``          yes     yes     every
                                                                                turn
copilot           ``copilot(task, …)``                          no      no      every
                                                                                turn
================  ===========================================  ======  ======  ======

The maintained line, ``mars-cmbagent`` 2.2.5 (it imports as ``cmbagent``),
has ``one-shot`` and ``planning-control`` (through ``deep_research``, see
``deep_research.py``) but no ``control`` or ``human_in_the_loop``. The
utility modes (``utilities.py``): ``enhance-input`` (``preprocess_task``),
``arxiv`` (``arxiv_filter``, needs no key) and ``ocr`` (``arxiv_filter`` and
``process_single_pdf``, needs ``MISTRAL_API_KEY``) run on post63 and mars,
not on post30. Its ``compare_plans`` is not a mode: it judges which steps of
an old plan a new one can reuse, for re-planning in one work dir, and a
cmbtask session already knows which steps completed.

A mode runs when the installed release exports one of its functions. That is
read from the package's ``__init__.py`` without importing it (see
``library.exported_names``), so ``--describe-engines`` stays fast; when the
library is not there to read, the table's ``in_supported_releases`` says what
both releases have. ``copilot`` is in neither: it becomes available, with no
change here, once a release exports ``cmbagent.copilot``.

Resume is the engine's own: a stopped ``planning-control`` plan continues in
the session's next task with ``control`` on the remaining steps (post63's
``restart_at_step`` is not used, so both releases resume the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Any, Final

from ..base import EngineError
from . import utilities, workflows

__all__ = [
    "MODES",
    "SUPPORTED_RELEASES",
    "ModeBinding",
    "function_of",
    "library_function",
    "unavailable_reason",
]

SUPPORTED_RELEASES: Final = ("0.0.1.post30", "0.0.1.post63")


@dataclass(frozen=True, slots=True)
class ModeBinding:
    """How one cmbtask mode maps onto the library."""

    #: the engine's workflow for the mode
    workflow: Callable[[workflows.Run], dict[str, Any]]
    #: the library functions that implement it; the first one the release exports is used
    functions: tuple[str, ...]
    human_in_the_loop: bool
    resume: bool
    #: whether every release in SUPPORTED_RELEASES has it (assumed when the library cannot be read)
    in_supported_releases: bool = True
    #: further library functions it needs, all of them
    also_needs: tuple[str, ...] = ()
    #: the key variables it needs: None any LLM provider's, () none, else one of these
    keys: tuple[str, ...] | None = None


MODES: Final[dict[str, ModeBinding]] = {
    "one-shot": ModeBinding(workflows.one_shot, ("one_shot",), human_in_the_loop=False, resume=False),
    "planning-control": ModeBinding(
        workflows.planning_control,
        ("planning_and_control_context_carryover", "deep_research"),
        human_in_the_loop=True,
        resume=True,
    ),
    "control": ModeBinding(workflows.control, ("control",), human_in_the_loop=False, resume=False),
    "hitl-interactive": ModeBinding(
        workflows.hitl_interactive, ("human_in_the_loop",), human_in_the_loop=True, resume=False
    ),
    "copilot": ModeBinding(
        workflows.copilot, ("copilot",), human_in_the_loop=True, resume=False, in_supported_releases=False
    ),
    "enhance-input": ModeBinding(
        utilities.enhance_input,
        ("preprocess_task",),
        human_in_the_loop=False,
        resume=False,
        in_supported_releases=False,
    ),
    "arxiv": ModeBinding(
        utilities.arxiv,
        ("arxiv_filter",),
        human_in_the_loop=False,
        resume=False,
        in_supported_releases=False,
        keys=(),
    ),
    "ocr": ModeBinding(
        utilities.ocr,
        ("process_single_pdf",),
        human_in_the_loop=False,
        resume=False,
        in_supported_releases=False,
        also_needs=("arxiv_filter",),
        keys=("MISTRAL_API_KEY",),
    ),
}


def library_function(mode: str, exported: Set[str] | None) -> str | None:
    """The library function that runs ``mode``, or None if the release has none.

    ``exported`` is what the installed ``cmbagent`` package exports, or None
    when that is unknown (the library is not installed or not readable).
    """
    binding = MODES[mode]
    if exported is None:
        return binding.functions[0] if binding.in_supported_releases else None
    if not all(name in exported for name in binding.also_needs):
        return None
    return next((name for name in binding.functions if name in exported), None)


def unavailable_reason(mode: str, exported: Set[str] | None, version: str | None) -> str | None:
    """Why the installed release cannot run ``mode``, or None if it can."""
    if library_function(mode, exported) is not None:
        return None
    binding = MODES[mode]
    parts = []
    if exported is None or not any(name in exported for name in binding.functions):
        parts.append(" or ".join(f"cmbagent.{name}" for name in binding.functions))
    parts += [
        f"cmbagent.{name}" for name in binding.also_needs if exported is not None and name not in exported
    ]
    needs = " and ".join(parts)
    known = " or ".join(SUPPORTED_RELEASES)
    # version: "0.0.1.post63" (cmbagent's) or a release with its distribution, "mars-cmbagent 2.2.5"
    named = version if version is None or " " in version else f"cmbagent {version}"
    release = f"the installed {named}" if named else f"cmbagent {known}"
    return f"{mode} is not part of {release} (it needs {needs})"


def function_of(lib: Any, mode: str, version: str | None) -> Callable[..., Any]:
    """The function that runs ``mode`` in the imported library ``lib``: the
    final word after ``validate`` judged by the package's source."""
    binding = MODES[mode]
    exported = {
        name for name in (*binding.functions, *binding.also_needs) if callable(getattr(lib, name, None))
    }
    name = library_function(mode, exported)
    if name is None:
        raise EngineError(unavailable_reason(mode, exported, version) or f"cmbagent cannot run {mode}")
    function: Callable[..., Any] = getattr(lib, name)
    return function
