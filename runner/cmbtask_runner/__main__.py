"""``python -m cmbtask_runner`` / ``cmbtask-runner``: run one task, then exit.

Exit codes: 0 succeeded, 1 failed, 2 cancelled, 3 timed out, 4 the gateway
link failed for good (bad token, unknown task, replaced, unreachable), 5 the
final event was never acknowledged, 64 bad configuration. The code and the
final event are also written to ``exit.json`` in the work directory, where
the local executor finds them for runners a previous gateway started.

``--describe-engines`` instead prints what the installed engines can run
(one JSON object, see describe.py) and exits 0; the gateway asks this once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import structlog
from cmbtask_protocol import EXIT_FILE, RunnerExit

from . import tracing
from .config import ConfigError, RunnerConfig
from .describe import describe_engines
from .logs import LogSink, configure_logging
from .running import RunResult, run_task

__all__ = ["main"]

DESCRIBE_FLAG = "--describe-engines"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if DESCRIBE_FLAG in args:
        return _describe()
    try:
        config = RunnerConfig.load(argv)
    except ConfigError as exc:
        sys.stderr.write(f"cmbtask-runner: {exc}\n")
        return RunnerExit.USAGE
    config.work_dir.mkdir(parents=True, exist_ok=True)
    sink = LogSink(config.work_dir / "runner.log", os.dup(2))
    configure_logging(sink, task_id=config.task_id)
    log = structlog.get_logger("cmbtask_runner")
    tracing.start()
    with tracing.runner_span(config.task_id) as span:
        if span is not None:
            configure_logging(sink, task_id=config.task_id, **tracing.log_fields())
        log.info(
            "runner.start", pid=os.getpid(), work_dir=str(config.work_dir), gateway_url=config.gateway_url
        )
        result = _run(config, sink)
        if span is not None:
            span.set_attributes(
                {"cmbtask.exit_code": int(result.exit_code), "cmbtask.final_event": str(result.final_event)}
            )
    _write_exit_file(config.work_dir, result)
    log.info("runner.exit", exit_code=result.exit_code, final_event=result.final_event, acked=result.acked)
    tracing.flush()
    return result.exit_code


def _run(config: RunnerConfig, sink: LogSink) -> RunResult:
    try:
        return asyncio.run(run_task(config, sink))
    except Exception as exc:  # the last line of defence: say why, and still leave an exit file
        structlog.get_logger("cmbtask_runner").exception("runner.crashed")
        return RunResult(RunnerExit.FAILED, reason=f"runner crashed: {type(exc).__name__}: {exc}")


def _describe() -> int:
    # Logs to stderr only: stdout carries the one JSON document.
    configure_logging(LogSink(None, os.dup(2)))
    sys.stdout.write(describe_engines().model_dump_json() + "\n")
    return 0


def _write_exit_file(work_dir: Path, result: RunResult) -> None:
    record = {
        "exit_code": result.exit_code,
        "final_event": result.final_event,
        "reason": result.reason,
        "acked": result.acked,
        "pid": os.getpid(),
        "time": time.time(),
    }
    tmp = work_dir / (EXIT_FILE + ".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(work_dir / EXIT_FILE)


if __name__ == "__main__":
    # os._exit: an engine thread stuck in C code must not keep a finished runner alive.
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
