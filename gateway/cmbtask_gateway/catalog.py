"""What the runners can run, so ``/api/modes`` and task submission tell the truth.

The gateway never imports the runner, and the runner may live in another
Python environment (the ``cmbagent`` engine has a venv of its own), so the
gateway asks the runner command: ``<runner command> --describe-engines``
prints an ``EnginesDescription``. It runs in the background, with a
timeout, at start and again when an answer is older than
``CMBTASK_DESCRIBE_ENGINES_REFRESH_S``; ``CMBTASK_ENGINES_JSON`` gives the description
instead (for the ``kubernetes`` executor, whose runners are pods). Without
either, or when asking fails, the catalog is *unknown* and the gateway keeps
its old behaviour: every installed engine, every mode available.

How a known description shapes the mode list (``mode_views``):

- ``engines``: only the engines that can run the mode here, in the table's
  order. ``demo`` and ``script`` take any mode as a label, so they stay
  listed for every mode: a mode is always usable with them.
- ``available`` / ``unavailable_reason``: whether the mode's real
  implementation, the ``cmbagent`` engine, can run it here (its library
  installed, an API key configured, the mode supported by the installed
  release). A label engine running a mode does not make the mode available.
- ``supports_resume``: whether the installed ``cmbagent`` engine continues
  that mode from a session's saved state.
- ``needs_keys``: when nothing but a missing key holds the mode back, the
  variables (any one of them) to set for the runners.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from cmbtask_protocol import EngineDescription, EnginesDescription, ModeInfo
from pydantic import ValidationError

from .logs import get_logger

__all__ = [
    "IMPLEMENTATION",
    "EngineCatalog",
    "describe_runner_engines",
    "mode_views",
    "parse_engines_json",
    "refusal",
]

log = get_logger(__name__)

#: the engine that implements the CMBAgent modes; the others take a mode as a label
IMPLEMENTATION = "cmbagent"
DESCRIBE_FLAG = "--describe-engines"
MAX_DESCRIPTION_BYTES = 1024 * 1024


def refusal(engine: EngineDescription, mode: str, own_keys: AbstractSet[str] = frozenset()) -> str | None:
    """Why ``engine`` cannot run a task in ``mode`` here, or None if it can.

    ``own_keys``: the key variables the user's runners get from keys the user
    stored. The runners were described without them, so a refusal that names
    one of them does not hold for this user."""
    reason = _refusal(engine, mode)
    if reason is not None and any(variable in reason for variable in own_keys):
        return None
    return reason


def _refusal(engine: EngineDescription, mode: str) -> str | None:
    if engine.loaded and engine.modes is not None and mode not in engine.modes:
        if known := engine.unavailable_modes.get(mode):
            return known
        return f"engine {engine.name!r} has no mode {mode!r} (its modes: {', '.join(engine.modes) or 'none'})"
    if keys := engine.needs_keys.get(mode):
        known = engine.unavailable_modes.get(mode) or (
            None if engine.available else engine.unavailable_reason
        )
        return known or f"needs {' or '.join(keys)} (not set for the runner)"
    if not engine.loaded or not engine.available:
        return engine.unavailable_reason or f"engine {engine.name!r} is not available in the runner"
    return None


def mode_views(
    modes: Sequence[ModeInfo],
    description: EnginesDescription | None,
    installed: Sequence[str],
    own_keys: AbstractSet[str] = frozenset(),
) -> list[ModeInfo]:
    """The ``/api/modes`` answer for a user whose stored keys give their runners
    ``own_keys`` (see the module docstring for the rules)."""
    if description is None:
        names = set(installed)
        return [
            mode.model_copy(update={"engines": [e for e in mode.engines if e in names]}) for mode in modes
        ]
    return [_mode_view(mode, description, own_keys) for mode in modes]


def _mode_view(mode: ModeInfo, description: EnginesDescription, own_keys: AbstractSet[str]) -> ModeInfo:
    engines = description.engines
    listed = [*mode.engines, *sorted(name for name in engines if name not in mode.engines)]
    runnable = [
        name for name in listed if name in engines and refusal(engines[name], mode.name, own_keys) is None
    ]
    implementation = engines.get(IMPLEMENTATION)
    if implementation is None:
        reason: str | None = f"the {IMPLEMENTATION} engine is not installed in the runner"
    else:
        reason = refusal(implementation, mode.name, own_keys)
    return mode.model_copy(
        update={
            "engines": runnable,
            "available": reason is None,
            "unavailable_reason": reason,
            "supports_resume": implementation is not None and mode.name in implementation.resume_modes,
            "needs_keys": []
            if reason is None or implementation is None
            else implementation.needs_keys.get(mode.name, []),
        }
    )


class EngineCatalog:
    """The runners' engines: a fixed description, one asked of the runner
    command (again every ``refresh_s``, so installing the ``cmbagent`` extra
    or setting a key shows without a gateway restart), or unknown."""

    def __init__(self, description: EnginesDescription | None = None) -> None:
        self._fixed = description
        self._ask: Callable[[], Coroutine[Any, Any, EnginesDescription | None]] | None = None
        self._probe: asyncio.Task[EnginesDescription | None] | None = None
        self._refresh_s = 0.0
        self._asked_at = 0.0
        self._known: EnginesDescription | None = None
        self._answered = False

    def start_probe(
        self, command: Sequence[str], env: Mapping[str, str], timeout_s: float, refresh_s: float = 0.0
    ) -> None:
        """Ask the runner command in the background; ``get`` waits for the first answer."""
        if self._probe is None:
            self._ask = lambda: describe_runner_engines(command, env, timeout_s)
            self._refresh_s = refresh_s
            self._reask()

    async def get(self) -> EnginesDescription | None:
        """The description, or None when unknown. Bounded by the probe's timeout;
        while a refresh is in flight, the last answer serves."""
        if self._probe is None:
            return self._fixed
        if not self._probe.done() and not self._answered:
            # shield: one caller giving up must not cancel the probe for everyone else
            await asyncio.shield(self._probe)
        if self._probe.done():
            self._take(self._probe.result())
            if self._refresh_s > 0 and time.monotonic() - self._asked_at >= self._refresh_s:
                self._reask()
        return self._known

    def known(self) -> EnginesDescription | None:
        """The last answer, without waiting or asking again; None while unknown."""
        if self._probe is None:
            return self._fixed
        if self._probe.done() and not self._probe.cancelled() and self._probe.exception() is None:
            self._take(self._probe.result())
        return self._known

    def runnable(self) -> dict[str, list[str] | None] | None:
        """Engine → the modes it can run here (None: any mode, as a label), for
        the engines that can run something; None while the runners are unknown."""
        description = self.known()
        if description is None:
            return None
        runnable: dict[str, list[str] | None] = {}
        for name, engine in description.engines.items():
            if engine.modes is None:
                if engine.loaded and engine.available:
                    runnable[name] = None
            elif modes := [mode for mode in engine.modes if refusal(engine, mode) is None]:
                runnable[name] = modes
        return runnable

    def _take(self, answer: EnginesDescription | None) -> None:
        # a failed re-ask keeps the last good answer: a flaky probe must not
        # make every mode look available again
        if answer is not None or not self._answered:
            self._known = answer
        self._answered = True

    def _reask(self) -> None:
        assert self._ask is not None
        self._asked_at = time.monotonic()
        self._probe = asyncio.create_task(self._ask(), name="describe-engines")

    async def close(self) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe


async def describe_runner_engines(
    command: Sequence[str], env: Mapping[str, str], timeout_s: float
) -> EnginesDescription | None:
    """Run ``command --describe-engines``; None (and a warning) on any failure."""
    argv = [*command, DESCRIBE_FLAG]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a group to kill as one if it hangs
        )
    except OSError as error:
        log.warning("engines.describe_failed", command=argv, error=str(error))
        return None
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        _kill_group(process.pid)
        await process.wait()
        log.warning("engines.describe_failed", command=argv, error=f"no answer within {timeout_s}s")
        return None
    except asyncio.CancelledError:
        _kill_group(process.pid)
        raise
    return _parse(argv, process.returncode, out, err)


def _parse(argv: list[str], code: int | None, out: bytes, err: bytes) -> EnginesDescription | None:
    if code != 0 or len(out) > MAX_DESCRIPTION_BYTES:
        log.warning(
            "engines.describe_failed",
            command=argv,
            exit_code=code,
            stderr=err.decode(errors="replace")[-2000:],
        )
        return None
    try:
        description = EnginesDescription.model_validate_json(out.strip() or b"{}")
    except ValidationError as error:
        log.warning("engines.describe_failed", command=argv, error=str(error)[:2000])
        return None
    if not description.engines:
        log.warning("engines.describe_failed", command=argv, error="the runner described no engines")
        return None
    log.info(
        "engines.described",
        engines={name: engine.available for name, engine in description.engines.items()},
    )
    return description


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def parse_engines_json(text: str) -> EnginesDescription | None:
    """``CMBTASK_ENGINES_JSON``: a description given by the deployment."""
    try:
        return EnginesDescription.model_validate_json(text)
    except ValidationError as error:
        log.warning("engines.bad_setting", setting="CMBTASK_ENGINES_JSON", error=str(error)[:2000])
        return None
