"""Numbered outgoing frames, kept until the gateway acknowledges them.

Every frame that changes state on the gateway (event, approval request, state
save) gets the next ``rseq`` here and stays until a cumulative ``ack`` covers
it, so that a dropped connection or a restarted gateway loses nothing. Memory
is bounded: past ``max_frames``/``max_bytes`` new frames go to a JSONL spill
file in the work directory and are read back, in order, as acks make room.
The in-memory part is therefore also the window of frames in flight.

Thread-safe: engines emit from worker threads while the link reads from the
event loop.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Outbox"]

Frame = dict[str, Any]


class Outbox:
    def __init__(
        self,
        spill_path: Path,
        *,
        max_frames: int = 2000,
        max_bytes: int = 16 * 1024 * 1024,
        on_put: Callable[[], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._mem: deque[tuple[int, Frame, int]] = deque()  # (rseq, frame, size)
        self._mem_bytes = 0
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._spill_path = spill_path
        # Left by an earlier runner of the task (a retry runs in the same work
        # directory): its frames are numbered for that runner, not for us.
        spill_path.unlink(missing_ok=True)
        self._spill_read_offset = 0
        self._spilled = 0  # frames in the spill file not yet read back
        self._spilled_total = 0
        self._next_rseq = 1
        self._acked = 0
        self._on_put = on_put

    # ---- producers (any thread) ----------------------------------------------

    def put(self, frame: Frame) -> int:
        """Number the frame, keep it, and return its ``rseq``."""
        with self._lock:
            rseq = self._next_rseq
            self._next_rseq += 1
            numbered = {**frame, "rseq": rseq}
            line = json.dumps(numbered, separators=(",", ":"), default=str)
            if self._spilled or self._is_full(len(line)):
                self._spill(line)
            else:
                self._mem.append((rseq, numbered, len(line)))
                self._mem_bytes += len(line)
        if self._on_put is not None:
            self._on_put()
        return rseq

    def set_on_put(self, callback: Callable[[], None] | None) -> None:
        self._on_put = callback

    # ---- the link (event loop) -------------------------------------------------

    def ack(self, rseq: int) -> None:
        """Forget every frame up to ``rseq`` (cumulative) and refill from the spill."""
        with self._lock:
            if rseq <= self._acked:
                return
            self._acked = min(rseq, self._next_rseq - 1)
            while self._mem and self._mem[0][0] <= self._acked:
                _, _, size = self._mem.popleft()
                self._mem_bytes -= size
            self._skip_spilled_acked()
            self._refill()

    def continue_after(self, rseq: int) -> None:
        """Number frames from ``rseq + 1`` on: the gateway already holds that many
        of this task's frames, from an earlier runner of it (a retry). Only a
        runner that has numbered nothing yet can take the numbering over."""
        with self._lock:
            if self._next_rseq == 1 and rseq > 0:
                self._next_rseq = rseq + 1
                self._acked = rseq

    def frames_after(self, rseq: int, limit: int = 500) -> list[Frame]:
        """In-memory frames above ``rseq``, oldest first (the sending window)."""
        with self._lock:
            return [frame for seq, frame, _ in self._mem if seq > rseq][:limit]

    @property
    def acked(self) -> int:
        return self._acked

    @property
    def last_rseq(self) -> int:
        return self._next_rseq - 1

    @property
    def pending(self) -> int:
        """Frames not acknowledged yet (in memory and spilled)."""
        with self._lock:
            return len(self._mem) + self._spilled

    @property
    def spilled_total(self) -> int:
        """How many frames ever went through the spill file (for figures and tests)."""
        return self._spilled_total

    # ---- internals (lock held) ----------------------------------------------------

    def _is_full(self, size: int) -> bool:
        return len(self._mem) >= self._max_frames or (
            bool(self._mem) and self._mem_bytes + size > self._max_bytes
        )

    def _spill(self, line: str) -> None:
        with self._spill_path.open("a", encoding="utf-8") as spill:
            spill.write(line + "\n")
        self._spilled += 1
        self._spilled_total += 1

    def _refill(self) -> None:
        if not self._spilled:
            return
        with self._spill_path.open("r", encoding="utf-8") as spill:
            spill.seek(self._spill_read_offset)
            while self._spilled:
                line = spill.readline()
                if not line or self._is_full(len(line)):
                    break
                self._spill_read_offset = spill.tell()
                self._spilled -= 1
                frame = json.loads(line)
                self._mem.append((int(frame["rseq"]), frame, len(line)))
                self._mem_bytes += len(line)
        if not self._spilled:
            # Everything is back in memory: start the file afresh so it never grows unbounded.
            self._spill_path.unlink(missing_ok=True)
            self._spill_read_offset = 0

    def _skip_spilled_acked(self) -> None:
        """A gateway may acknowledge frames we still hold only on disk (it got them
        before a reconnect); memory is empty then, read them back and drop them."""
        while not self._mem and self._spilled:
            self._refill()
            while self._mem and self._mem[0][0] <= self._acked:
                _, _, size = self._mem.popleft()
                self._mem_bytes -= size
            if self._mem:
                return
