"""The runner's own logs: structlog JSON lines to ``runner.log`` and stderr.

They must never mix with the task's output, which the runner captures from
fd 1/2 and the root logger. So they are written to a file in the work
directory and to a copy of the original stderr taken before the capture
starts (the local executor keeps that in ``runner.out``; in a pod it is the
container log). The standard-library loggers the runner itself uses
(websockets, asyncio) are routed the same way and kept off the root logger.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path
from typing import Any, TextIO, cast

import structlog

from .capture import RUNNER_LOGGERS

__all__ = ["LogSink", "configure_logging"]


class LogSink(io.TextIOBase):
    """A text sink writing each line to the log file and to a stderr fd."""

    def __init__(self, path: Path | None, stderr_fd: int | None) -> None:
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8") if path is not None else None
        self.stderr_fd = stderr_fd

    def write(self, text: str) -> int:
        with self._lock:
            if self._file is not None:
                self._file.write(text)
                self._file.flush()
            if self.stderr_fd is not None:
                try:
                    os.write(self.stderr_fd, text.encode("utf-8", errors="replace"))
                except OSError:
                    self.stderr_fd = None  # nobody listens any more; the file still does
        return len(text)

    def retarget(self, stderr_fd: int) -> None:
        """Write to this fd from now on (the saved original stderr once fd 2 is captured)."""
        with self._lock:
            self.stderr_fd = stderr_fd


def configure_logging(sink: LogSink, **bound: Any) -> None:
    """Route every runner log line to ``sink`` with ``bound`` (task_id, session_id)
    on each. Static fields, not contextvars: worker threads do not inherit those."""
    static = dict(bound)

    def add_bound(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        for key, value in static.items():
            event.setdefault(key, value)
        return event

    structlog.configure(
        processors=[
            add_bound,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, sink)),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in RUNNER_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.WARNING if name != "cmbtask_runner" else logging.INFO)
