"""``python -m cmbtask_runner --describe-engines``: what this runner can run.

The gateway does not import the runner and may not even share its Python
environment (the ``cmbagent`` engine lives in a venv of its own), so it asks
the runner command itself: one JSON ``EnginesDescription`` on stdout, with,
per engine of the ``cmbtask.engines`` group, whether it loads, which modes it
runs, which of them resume, and why it cannot run when it cannot.

Cheap and side-effect free: no network, no work directory, no import of the
heavy libraries the engines wrap. An engine describes itself through an
optional ``describe()`` method returning an ``EngineDescription``; one
without it runs any mode as a label.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

import structlog
from cmbtask_protocol import EngineDescription, EnginesDescription

__all__ = ["describe_engine", "describe_engines"]

log = structlog.get_logger("cmbtask_runner.describe")


def describe_engines() -> EnginesDescription:
    """Every engine of the ``cmbtask.engines`` group, by name."""
    points = {point.name: point for point in entry_points(group="cmbtask.engines")}
    return EnginesDescription(engines={name: describe_engine(points[name]) for name in sorted(points)})


def describe_engine(point: EntryPoint) -> EngineDescription:
    try:
        engine: Any = point.load()()
    except Exception as exc:  # a broken plugin is reported, not fatal: the others still run
        log.warning("engine.load_failed", engine=point.name, error=str(exc))
        return EngineDescription(
            name=point.name,
            loaded=False,
            available=False,
            unavailable_reason=f"engine {point.name!r} failed to load: {type(exc).__name__}: {exc}",
        )
    describe = getattr(engine, "describe", None)
    if describe is None:
        return EngineDescription(name=point.name, loaded=True, available=True)
    try:
        described = describe()
    except Exception as exc:
        log.warning("engine.describe_failed", engine=point.name, error=str(exc))
        return EngineDescription(
            name=point.name,
            loaded=True,
            available=False,
            unavailable_reason=f"engine {point.name!r} could not describe itself: {exc}",
        )
    if not isinstance(described, EngineDescription):
        return EngineDescription(
            name=point.name,
            loaded=True,
            available=False,
            unavailable_reason=f"engine {point.name!r} returned a malformed description",
        )
    return described.model_copy(update={"name": point.name, "loaded": True})
