"""The ``cmbagent`` engine: CMBAgent's workflows inside the runner process.

The run is wired up once around the library call: the task's IOStream
(events and human input), the cost recorder, the file watcher, and the
current directory (cmbagent and AG2 write caches and reports relative to it).
The library writes into ``<work dir>/cmbagent``, never the work dir itself,
because it clears the directory it is given.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import structlog
from cmbtask_protocol import EngineDescription, TaskSpec

from .. import parse_params
from ..base import EngineContext, EngineError
from . import adapters, library, workflows
from .costs import CostRecorder
from .files import FileWatcher
from .mapping import EventMapper
from .modes import MODES, function_of, unavailable_reason
from .params import CmbAgentParams
from .streaming import TaskIOStream

__all__ = ["CmbAgentEngine"]

log = structlog.get_logger("cmbtask_runner.engines.cmbagent")

OUTPUT_DIR = "cmbagent"


class CmbAgentEngine:
    name: ClassVar[str] = "cmbagent"

    def validate(self, task: TaskSpec) -> None:
        """Fail before anything starts when the task cannot run here."""
        if task.mode not in MODES:
            raise EngineError(f"cmbagent has no mode {task.mode!r} (modes: {', '.join(sorted(MODES))})")
        if refused := unavailable_reason(task.mode, library.exported_names(), library.installed_release()):
            raise EngineError(refused)
        params = parse_params(CmbAgentParams, task.params)
        if task.mode == "control" and not params.plan:
            raise EngineError(
                "control mode needs params.plan: a list of {sub_task, sub_task_agent, bullet_points}"
            )
        if not task.prompt.strip():
            raise EngineError("a cmbagent task needs a prompt")
        if not library.is_installed():
            raise EngineError(library.unavailable_reason() or "cmbagent is not installed")
        if reason := library.key_reason(MODES[task.mode].keys):
            raise EngineError(reason)
        library.model_overrides()  # a malformed CMBAGENT_MODELS fails here, not mid-run

    def describe(self) -> EngineDescription:
        """What this runner can run, for ``--describe-engines``: no import of the library.

        ``modes`` are the installed release's; those of them whose key is
        missing are in ``needs_keys`` too (with the reason in
        ``unavailable_modes``), so the gateway can say which variable to set."""
        exported, release = library.exported_names(), library.installed_release()
        installed = library.is_installed()
        refused = {mode: unavailable_reason(mode, exported, release) for mode in MODES}
        in_release = sorted(mode for mode, why in refused.items() if why is None)
        keys = {mode: library.key_reason(MODES[mode].keys) for mode in in_release} if installed else {}
        blocked = {mode: why for mode, why in keys.items() if why is not None}
        available = installed and len(blocked) < len(in_release)
        return EngineDescription(
            name=self.name,
            loaded=True,
            available=available,
            unavailable_reason=None if available else library.unavailable_reason(),
            modes=in_release,
            resume_modes=[mode for mode in in_release if MODES[mode].resume],
            unavailable_modes={**{m: why for m, why in refused.items() if why is not None}, **blocked},
            needs_keys={mode: library.missing_keys(MODES[mode].keys) for mode in blocked},
            library_version=library.installed_version(),
        )

    def run(self, ctx: EngineContext) -> dict[str, Any] | None:
        params = parse_params(CmbAgentParams, ctx.task.params)
        root = ctx.work_dir / OUTPUT_DIR
        root.mkdir(parents=True, exist_ok=True)
        mapper = EventMapper()
        costs = CostRecorder(ctx.emit)
        with _cwd(root):
            lib = library.import_cmbagent()
            function = function_of(lib, ctx.task.mode, library.installed_release())
            run = workflows.Run(ctx=ctx, params=params, lib=lib, root=root, mapper=mapper, function=function)
            watcher = FileWatcher(ctx.work_dir, root, ctx.emit, max_bytes=params.max_file_bytes)
            steps = adapters.track_steps(lambda *step: _emit(ctx, mapper.library_step(*step)))
            with watcher, steps, _recording(costs), _stream(TaskIOStream(ctx, mapper)):
                log.info("cmbagent.run", mode=ctx.task.mode, agent=params.agent)
                result = MODES[ctx.task.mode].workflow(run)
        return {
            **result,
            "mode": ctx.task.mode,
            **costs.summary(),
            "files": len(watcher.announced),
            "steps_completed": len(mapper.completed_steps),
        }


def _emit(ctx: EngineContext, mapped: list[tuple[str, dict[str, Any]]]) -> None:
    for event_type, data in mapped:
        ctx.emit(event_type, data)


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    # The process runs one task, so changing its directory affects no one else.
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _recording(costs: CostRecorder) -> Iterator[None]:
    # Imported late and by name: the library is an optional extra.
    undo = [costs.install(agent_class) for agent_class in _reply_classes()]
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def _reply_classes() -> list[Any]:
    """The classes whose LLM reply method records the cost rows: AG2's agent,
    and the maintained line's own agent class, which overrides that method
    (without calling AG2's) on AG2 itself."""
    classes = [importlib.import_module("autogen").ConversableAgent]
    if importlib.util.find_spec("cmbagent.base_agent") is not None:
        own = getattr(importlib.import_module("cmbagent.base_agent"), "CmbConversableAgent", None)
        if own is not None and "_generate_oai_reply_from_client" in vars(own):
            classes.append(own)
    return classes


@contextlib.contextmanager
def _stream(stream: TaskIOStream) -> Iterator[None]:
    io_stream = importlib.import_module("autogen.io.base").IOStream
    # Scoped for this thread; also the global default, because a context
    # variable does not follow threads the library may start.
    io_stream.set_global_default(stream)
    with io_stream.set_default(stream):
        yield
