"""How a background loop (dispatch, sweeps, token checks) reports failures.

During a database outage every tick fails the same way; a traceback per tick
buries the one line that says what happened. The first failure of a run is
logged with its traceback, repeats of the same kind are only counted, and the
recovery is one line with that count. A failure that does not go away says
so again every ``REMIND_EVERY`` repeats (one line, no traceback), so a loop
that fails for hours is not silent. A different kind of failure is logged in
full at once.
"""

from __future__ import annotations

from .logs import get_logger

__all__ = ["LoopErrors"]

log = get_logger(__name__)

REMIND_EVERY = 100


class LoopErrors:
    def __init__(self, event: str) -> None:
        self._event = event
        self._failing: type[BaseException] | None = None
        self._repeats = 0

    def failed(self, error: BaseException) -> None:
        if type(error) is self._failing:
            self._repeats += 1
            if self._repeats % REMIND_EVERY == 0:
                log.warning(
                    f"{self._event}.still_failing", failure=self._failing.__name__, repeats=self._repeats
                )
            return
        self._failing, self._repeats = type(error), 0
        log.error(self._event, error=str(error)[:300] or type(error).__name__, exc_info=error)

    def succeeded(self) -> None:
        if self._failing is None:
            return
        log.info(f"{self._event}.recovered", failure=self._failing.__name__, repeats=self._repeats)
        self._failing, self._repeats = None, 0
