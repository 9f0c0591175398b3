"""Parameters of the built-in engines, shared so the gateway can refuse bad
input at submit time (HTTP 422) instead of starting a process that fails.

Engines outside this table validate their own parameters in the runner.

Also the shape of ``python -m cmbtask_runner --describe-engines``: what the
runner's installed engines can run, so the gateway can say which modes are
available and refuse a task no runner could start.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BUILTIN_ENGINE_PARAMS",
    "DemoParams",
    "EngineDescription",
    "EnginesDescription",
    "ScriptParams",
]


class DemoParams(BaseModel):
    """The deterministic ``demo`` workflow: plan, steps, output, approvals."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=3, ge=1, le=1000)
    step_delay_s: float = Field(default=0.5, ge=0.0, le=3600.0)
    lines_per_step: int = Field(default=3, ge=0, le=100_000)
    approve_plan: bool = False
    #: ask for an approval before these 1-based steps
    approve_steps: list[int] = Field(default_factory=list, max_length=1000)
    fail_at_step: int | None = Field(default=None, ge=1)
    #: emit agent messages, code blocks and cost updates along the way
    chatter: bool = True
    #: save session state after every step (resume continues after the last one)
    checkpoint: bool = True


class ScriptParams(BaseModel):
    """The ``script`` engine: a user's Python source, a file, or a command."""

    model_config = ConfigDict(extra="forbid")

    code: str | None = Field(default=None, max_length=1_000_000)
    path: str | None = Field(default=None, max_length=4096)
    command: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    env: dict[str, str] = Field(default_factory=dict, max_length=200)
    #: lines per second above which output is dropped (with a notice)
    max_output_lines_per_s: int = Field(default=5000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ScriptParams:
        given = [name for name in ("code", "path", "command") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of 'code', 'path' or 'command'")
        return self


BUILTIN_ENGINE_PARAMS: Final[dict[str, type[BaseModel]]] = {
    "demo": DemoParams,
    "script": ScriptParams,
}


class EngineDescription(BaseModel):
    """What one engine of the ``cmbtask.engines`` group can run in this runner."""

    name: str
    #: the plugin imported and instantiated
    loaded: bool
    #: it can run tasks here (its library is installed, a key is configured ...)
    available: bool
    #: why not, in a sentence for people (when not loaded or not available)
    unavailable_reason: str | None = None
    #: modes it runs; None: any mode, taken as a label (demo, script)
    modes: list[str] | None = None
    #: modes whose tasks continue from the session's saved state
    resume_modes: list[str] = Field(default_factory=list)
    #: modes it knows but cannot run with what is installed, and why
    unavailable_modes: dict[str, str] = Field(default_factory=dict)
    #: modes held back only by a missing key: the variables, any one of which would do
    needs_keys: dict[str, list[str]] = Field(default_factory=dict)
    #: version of the library it wraps, when there is one
    library_version: str | None = None


class EnginesDescription(BaseModel):
    """The runner's answer to ``--describe-engines``, keyed by engine name."""

    v: int = 1
    engines: dict[str, EngineDescription] = Field(default_factory=dict)
