"""Capture everything the task writes and turn it into ``output`` events.

The runner is one process per task, so it may take over its own file
descriptors: fd 1 and fd 2 become pipes (``os.pipe`` + ``dup2``), which catches
``print``, ``sys.stdout.write``, C extensions and child processes alike, and a
handler on the root logger catches ``logging``. The runner's own logs never
pass through here (they go to the saved original stderr and ``runner.log``).

Every line is delivered exactly once. Bursts are coalesced (lines within
``coalesce_s``, up to ``max_chunk_bytes``) into one event, and a token bucket
per stream drops lines beyond ``max_lines_per_s`` with one notice per flood
that says how many were dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RUNNER_LOGGERS", "OutputCapture"]

Emit = Callable[[str, dict[str, Any]], object]

#: loggers of the runner itself: never part of the task's output
RUNNER_LOGGERS = ("cmbtask_runner", "websockets", "asyncio")
#: a line without its newline is sent anyway after this long (progress bars, prompts)
PARTIAL_LINE_S = 0.5
#: while a flood lasts, remind at most this often how much was dropped
DROP_NOTICE_EVERY_S = 10.0
#: a flood is over (and its notice goes out) after this long without a dropped line
FLOOD_OVER_S = 1.0


@dataclass
class _Stream:
    """One output stream: a batch being coalesced, a partial line, a token bucket."""

    name: str
    rate: float
    batch: list[str] = field(default_factory=list)
    batch_bytes: int = 0
    batch_level: str | None = None
    batch_started: float = 0.0
    partial: bytes = b""
    partial_since: float = 0.0
    tokens: float = 0.0
    refilled: float = 0.0
    dropped: int = 0
    dropped_since_notice: int = 0
    last_drop: float = 0.0
    last_notice: float = 0.0

    def take_token(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class OutputCapture:
    def __init__(
        self,
        emit: Emit,
        *,
        max_lines_per_s: int = 5000,
        coalesce_s: float = 0.05,
        max_chunk_bytes: int = 64 * 1024,
    ) -> None:
        self._emit = emit
        self._coalesce_s = coalesce_s
        self._max_chunk = max_chunk_bytes
        now = time.monotonic()
        self._streams = {
            name: _Stream(name, float(max_lines_per_s), tokens=float(max_lines_per_s), refilled=now)
            for name in ("stdout", "stderr", "log")
        }
        self._cv = threading.Condition()
        self._readers: list[threading.Thread] = []
        #: open read ends of the pipes; a lock each, so that reading a chunk and
        #: feeding it is one step, whether the reader thread or ``flush`` does it
        self._pipes: dict[str, int] = {}
        self._read_locks = {name: threading.Lock() for name in ("stdout", "stderr")}
        self._flusher: threading.Thread | None = None
        self._stopping = False
        self._handler: _CaptureLogHandler | None = None
        self.saved_stdout = -1
        self.saved_stderr = -1

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Redirect fd 1/2 and the root logger. Keep copies of the originals."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved_stdout, self.saved_stderr = os.dup(1), os.dup(2)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)  # inheritable: child processes write here too
            os.close(write_end)
            os.set_blocking(read_end, False)  # the read end only: writers still block when it is full
            self._pipes[name] = read_end
            reader = threading.Thread(
                target=self._read, args=(read_end, name), name=f"capture-{name}", daemon=True
            )
            reader.start()
            self._readers.append(reader)
        # Line buffering so that a print shows up now, not when 8 KB have piled up.
        for stream in (sys.stdout, sys.stderr):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(line_buffering=True)
        self._flusher = threading.Thread(target=self._flush_loop, name="capture-flush", daemon=True)
        self._flusher.start()
        self._install_log_handler()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Restore fd 1/2, read what is left, send the last batches."""
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        # Closing our write ends (fd 1/2) lets the readers see EOF; a grandchild
        # that still holds a copy would keep them open, hence the bounded join.
        os.dup2(self.saved_stdout, 1)
        os.dup2(self.saved_stderr, 2)
        deadline = time.monotonic() + timeout_s
        for reader in self._readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._flusher is not None:
            self._flusher.join(timeout_s)

    # ---- producers ------------------------------------------------------------------------

    def _read(self, fd: int, name: str) -> None:
        try:
            open_ = True
            while open_:
                select.select([fd], [], [], 0.5)
                with self._read_locks[name]:
                    open_ = self._drain(fd, name)
        finally:
            with self._read_locks[name]:
                self._pipes.pop(name, None)
                os.close(fd)
            self._feed(name, b"", final=True)

    def _drain(self, fd: int, name: str, max_chunks: int = 16) -> bool:
        """Read and feed what the pipe holds now, up to ``max_chunks`` reads so that
        the lock is never held for long (lock held); False at end of file."""
        for _ in range(max_chunks):
            try:
                chunk = os.read(fd, 65536)
            except (BlockingIOError, InterruptedError):
                return True
            if not chunk:
                return False
            self._feed(name, chunk)
        return True

    def flush(self) -> None:
        """Send every complete line written so far, now.

        Called before each structured event, so that a step's printed output
        is not overtaken by the ``step.progress`` that follows it.
        """
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        for name, lock in self._read_locks.items():
            with lock:
                fd = self._pipes.get(name)
                if fd is not None:
                    self._drain(fd, name)  # bounded: a flooding child must not hold up the engine
        with self._cv:
            for stream in self._streams.values():
                if stream.batch:
                    self._flush_batch(stream)

    def _feed(self, name: str, chunk: bytes, *, final: bool = False) -> None:
        with self._cv:
            stream = self._streams[name]
            now = time.monotonic()
            data = stream.partial + chunk
            cut = data.rfind(b"\n") + 1
            if not stream.partial and data[cut:]:
                stream.partial_since = now
            stream.partial = data[cut:]
            if cut:
                for line in data[:cut].decode("utf-8", errors="replace").splitlines(keepends=True):
                    self._add_line(stream, line, None, now)
            if stream.partial and (final or len(stream.partial) >= self._max_chunk):
                self._add_line(stream, stream.partial.decode("utf-8", errors="replace"), None, now)
                stream.partial = b""
            self._cv.notify_all()

    def add_log_line(self, text: str, level: str) -> None:
        with self._cv:
            self._add_line(self._streams["log"], text, level, time.monotonic())
            self._cv.notify_all()

    def _add_line(self, stream: _Stream, line: str, level: str | None, now: float) -> None:
        """Put one line into its stream's batch, or count it as dropped (lock held)."""
        if not stream.take_token(now):
            if not stream.dropped_since_notice:
                stream.last_notice = now  # a flood starts: the reminder clock starts too
            stream.dropped += 1
            stream.dropped_since_notice += 1
            stream.last_drop = now
            return
        if stream.batch and (level != stream.batch_level or stream.batch_bytes + len(line) > self._max_chunk):
            self._flush_batch(stream)
        if not stream.batch:
            stream.batch_started = now
            stream.batch_level = level
        stream.batch.append(line)
        stream.batch_bytes += len(line)

    # ---- the flusher ------------------------------------------------------------------------

    def _flush_loop(self) -> None:
        with self._cv:
            while True:
                now = time.monotonic()
                for stream in self._streams.values():
                    self._flush_due(stream, now, force=self._stopping)
                if self._stopping:
                    return
                self._cv.wait(self._next_wakeup(now))

    def _flush_due(self, stream: _Stream, now: float, *, force: bool) -> None:
        if stream.partial and (force or now - stream.partial_since >= PARTIAL_LINE_S):
            self._add_line(stream, stream.partial.decode("utf-8", errors="replace"), None, now)
            stream.partial = b""
        if stream.batch and (force or now - stream.batch_started >= self._coalesce_s):
            self._flush_batch(stream)
        flood_over = now - stream.last_drop >= FLOOD_OVER_S
        overdue = now - stream.last_notice >= DROP_NOTICE_EVERY_S
        if stream.dropped_since_notice and (force or flood_over or overdue):
            self._drop_notice(stream, now)

    def _next_wakeup(self, now: float) -> float:
        waits = [1.0]
        for stream in self._streams.values():
            if stream.batch:
                waits.append(stream.batch_started + self._coalesce_s - now)
            if stream.partial:
                waits.append(stream.partial_since + PARTIAL_LINE_S - now)
            if stream.dropped_since_notice:
                waits.append(stream.last_drop + FLOOD_OVER_S - now)
        return max(0.005, min(waits))

    def _flush_batch(self, stream: _Stream) -> None:
        data: dict[str, Any] = {"stream": stream.name, "text": "".join(stream.batch)}
        if stream.batch_level is not None:
            data["level"] = stream.batch_level
        stream.batch, stream.batch_bytes, stream.batch_level = [], 0, None
        self._emit("output", data)

    def _drop_notice(self, stream: _Stream, now: float) -> None:
        if stream.batch:
            self._flush_batch(stream)
        count, stream.dropped_since_notice, stream.last_notice = stream.dropped_since_notice, 0, now
        text = f"cmbtask: dropped {count} lines of {stream.name} (over {stream.rate:.0f} lines/s)\n"
        self._emit(
            "output",
            {
                "stream": "log",
                "level": "WARNING",
                "text": text,
                "dropped": count,
                "dropped_stream": stream.name,
            },
        )

    @property
    def dropped(self) -> dict[str, int]:
        with self._cv:
            return {name: stream.dropped for name, stream in self._streams.items()}

    # ---- logging ----------------------------------------------------------------------------

    def _install_log_handler(self) -> None:
        root = logging.getLogger()
        self._handler = _CaptureLogHandler(self)
        root.addHandler(self._handler)
        if root.level == logging.WARNING:  # the library default: let INFO through
            root.setLevel(logging.INFO)


class _CaptureLogHandler(logging.Handler):
    def __init__(self, capture: OutputCapture) -> None:
        super().__init__(logging.NOTSET)
        self._capture = capture
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(RUNNER_LOGGERS):
            return
        try:
            self._capture.add_log_line(self.format(record) + "\n", record.levelname)
        except Exception:  # a broken log call must never break the task
            self.handleError(record)
