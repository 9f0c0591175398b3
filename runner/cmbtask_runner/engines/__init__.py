"""Engine plugins, loaded through the ``cmbtask.engines`` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .base import Engine, EngineError

__all__ = ["installed_engines", "load_engine", "parse_params"]

_Params = TypeVar("_Params", bound=BaseModel)


def installed_engines() -> list[str]:
    return sorted({point.name for point in entry_points(group="cmbtask.engines")})


def load_engine(name: str) -> Engine:
    """Instantiate the engine registered as ``name``; ``EngineError`` if there is none."""
    for point in entry_points(group="cmbtask.engines", name=name):
        engine: Engine = point.load()()
        return engine
    raise EngineError(f"unknown engine {name!r} (installed: {', '.join(installed_engines()) or 'none'})")


def parse_params(model: type[_Params], params: dict[str, Any]) -> _Params:
    """Validate an engine's params; a readable ``EngineError`` on bad input."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'params'}: {error['msg']}"
            for error in exc.errors()
        )
        raise EngineError(f"invalid params: {problems}") from None
