"""What the installed cmbagent release is, for tests whose expectations
differ between upstream's releases (0.0.1.post30 / post63) and the
maintained line (mars-cmbagent): agent names, where notes are saved, which
modes exist."""

from __future__ import annotations

import importlib.metadata

import pytest
from cmbtask_runner.engines.cmbagent import library
from cmbtask_runner.engines.cmbagent.modes import unavailable_reason

__all__ = ["MAINTAINED", "VERSION", "canonical", "notes_path", "require_mode"]


def _maintained() -> bool:
    try:
        importlib.metadata.version("mars-cmbagent")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


MAINTAINED = _maintained()
VERSION = library.installed_version()


def canonical(agent: str) -> str:
    """The maintained line calls its formatters ``*_response_evaluator``; the
    test server names them by their upstream role."""
    return agent.replace("_response_evaluator", "_response_formatter")


def notes_path(turn: int = 1, step: int = 1) -> str:
    """Where the researcher's notes land, relative to the task's work dir."""
    if MAINTAINED:
        return f"cmbagent/reports/step_{step}_research_notes_{turn}.md"
    return f"cmbagent/research_notes_{turn}.md"


def require_mode(mode: str) -> None:
    """Skip a test of a mode that the installed release does not have (the
    refusal itself is tested in test_modes_available)."""
    why = unavailable_reason(mode, library.exported_names(), VERSION)
    if why is not None:
        pytest.skip(why)
