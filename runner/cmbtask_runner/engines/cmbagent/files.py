"""Announce files a workflow writes as ``file.created`` events.

CMBAgent writes notes, code, data, plots and its own reports into the work
dir from many places (its executors, its cost and timing reports, LLM-written
scripts), so the only complete view is the directory itself. A thread polls
it and announces each new file once its size has held still for one poll, so
that the size (and a viewer opening it) sees a finished file. Paths are
relative to the task's work dir, which is where the gateway serves files from.
"""

from __future__ import annotations

import mimetypes
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

__all__ = ["FileWatcher"]

log = structlog.get_logger("cmbtask_runner.engines.cmbagent")

#: directories that hold caches, not results
SKIP_DIRS = frozenset({".cache", "__pycache__", ".ipynb_checkpoints", ".git"})
MAX_ANNOUNCED = 5000

Emit = Callable[[str, dict[str, Any]], None]


class FileWatcher:
    def __init__(self, root: Path, watched: Path, emit: Emit, *, max_bytes: int, interval_s: float = 0.5):
        self.root = root
        self.watched = watched
        self.emit = emit
        self.max_bytes = max_bytes
        self.interval_s = interval_s
        self.announced: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._too_big: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cmbagent-files", daemon=True)

    def __enter__(self) -> FileWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.scan(final=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.scan(final=False)
            except Exception:  # a vanished directory mid-walk: try again next poll
                log.debug("cmbagent.file_scan_failed", exc_info=True)

    def scan(self, *, final: bool) -> None:
        """Announce new files whose size held still (all of them when ``final``)."""
        for path in self._files():
            relative = path.relative_to(self.root).as_posix()
            if relative in self.announced or relative in self._too_big:
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if final or self._sizes.get(relative) == size:
                self._announce(relative, size)
            self._sizes[relative] = size

    def _files(self) -> list[Path]:
        found: list[Path] = []
        for directory, subdirs, names in os.walk(self.watched):
            subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS)
            found.extend(Path(directory, name) for name in sorted(names))
        return found

    def _announce(self, relative: str, size: int) -> None:
        if size > self.max_bytes:
            self._too_big.add(relative)
            log.info("cmbagent.file_too_big", path=relative, size=size, limit=self.max_bytes)
            return
        if len(self.announced) >= MAX_ANNOUNCED:
            return
        self.announced[relative] = size
        mime, _ = mimetypes.guess_type(relative)
        if mime is None and relative.endswith(".md"):
            mime = "text/markdown"
        self.emit("file.created", {"path": relative, "size": size, "mime": mime})
