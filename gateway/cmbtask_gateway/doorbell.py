"""The dispatcher's doorbell: rung when a task may start or has ended.

Services that queue, finish or cancel tasks ring it after their commit; the
dispatcher waits on it between rounds (or for its watchdog interval). It is
built before both, so neither needs the other to exist first.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Doorbell"]


class Doorbell:
    def __init__(self) -> None:
        self._rung = asyncio.Event()

    def ring(self) -> None:
        self._rung.set()

    @property
    def rung(self) -> bool:
        return self._rung.is_set()

    async def wait(self, timeout_s: float) -> None:
        """Until rung or ``timeout_s`` passed; then unrung again."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._rung.wait()
        self._rung.clear()
