"""Calls that arrive while one is in flight go together in the next one.

A wave of tasks makes many small requests of one slow resource at once: fork
a runner, store a handle. Sent one by one, each waits in line for its own
round trip. ``Coalescing`` sends the first alone and, once it returns,
everything that queued meanwhile as one batch; each caller gets its own
result back, or the exception that failed its batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescing"]

T = TypeVar("T")
R = TypeVar("R")


class Coalescing(Generic[T, R]):
    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R | Exception]]]) -> None:
        """``run`` takes a batch and returns one result (or exception) per item, in order."""
        self._run = run
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._lock = asyncio.Lock()

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        async with self._lock:
            batch, self._pending = self._pending, []
            if batch:  # else a caller before us took our item along
                # Shielded: the caller that sends may be cancelled (its socket
                # closed, its task stopped); the others in its batch still get
                # their answers. The next batch may then start before this one ends.
                await asyncio.shield(self._send(batch))
        return await future

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        results: Sequence[R | Exception]
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as error:
            results = [error] * len(batch)
        for (_, waiting), result in zip(batch, results, strict=True):
            if waiting.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(result, Exception):
                waiting.set_exception(result)
            else:
                waiting.set_result(result)
