"""Parameters of the built-in engines, shared so the gateway can refuse bad
input at submit time (HTTP 422) instead of starting a process that fails.

Engines outside this table validate their own parameters in the runner.

Also the shape of ``python -m cmbtask_runner --describe-engines``: what the
runner's installed engines can run, so the gateway can say which modes are
available and refuse a task no runner could start.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .jsontypes import JSON_NUMBER, JsonBool, JsonFloat

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

    steps: Annotated[int, Field(ge=1, le=1000), JSON_NUMBER] = 3
    step_delay_s: JsonFloat = Field(default=0.5, ge=0.0, le=3600.0)
    lines_per_step: Annotated[int, Field(ge=0, le=100_000), JSON_NUMBER] = 3
    approve_plan: JsonBool = False
    #: ask for an approval before these 1-based steps
    approve_steps: list[Annotated[int, Field(ge=1, le=1000), JSON_NUMBER]] = Field(
        default_factory=list, max_length=1000
    )
    fail_at_step: Annotated[int, Field(ge=1, le=1000), JSON_NUMBER] | None = None
    #: emit agent messages, code blocks and cost updates along the way
    chatter: JsonBool = True
    #: save session state after every step (resume continues after the last one)
    checkpoint: JsonBool = True
    #: dollars each step's ``cost.update`` reports (with ``chatter``), to try budgets
    cost_usd_per_step: JsonFloat = Field(default=0.0, ge=0.0, le=1000.0)


def _one_source(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": [name], "properties": {name: schema}}


class ScriptParams(BaseModel):
    """The ``script`` engine: a user's Python source, a file, or a command."""

    # The "exactly one source" rule below, in the JSON Schema too: a source
    # counts when it is given, not null and not empty.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                _one_source("code", {"type": "string", "minLength": 1}),
                _one_source("path", {"type": "string", "minLength": 1}),
                _one_source("command", {"type": "array", "minItems": 1}),
            ]
        },
    )

    code: str | None = Field(default=None, max_length=1_000_000)
    path: str | None = Field(default=None, max_length=4096)
    command: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    env: dict[str, str] = Field(default_factory=dict, max_length=200)
    #: lines per second above which output is dropped (with a notice)
    max_output_lines_per_s: Annotated[int, Field(ge=1, le=1_000_000), JSON_NUMBER] = 5000

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
