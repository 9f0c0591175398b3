"""One thread that runs blocking calls in order for the event loop.

``loop.run_in_executor`` on a one-worker ``ThreadPoolExecutor`` does the same,
but each call there builds a work item and a ``concurrent.futures.Future``
with its condition, takes the pool's idle semaphore, and chains the result
back to an asyncio future through two callbacks. At one SQLite transaction
per event that bookkeeping showed in the paced phase's profile; without it
the paced CPU per delivery fell by ~7 % (``bench/README.md``). Here a call is
one queue entry, and its result goes to the awaiting asyncio future with one
``call_soon_threadsafe``.

A call whose caller was cancelled before the thread took it is skipped, as
the executor skips a work item cancelled before it ran; one that has started
runs to its end and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["WorkerThread"]

T = TypeVar("T")

_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class WorkerThread:
    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        # A daemon: a gateway that exits without ``stop`` must not hang on it.
        # SQLite rolls back a transaction cut short; nothing is half written.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def call(self, function: Callable[[], T]) -> T:
        """``function()`` on this thread, after every call made before it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, future, function))
        return await future

    def stop(self) -> None:
        """Finish the calls already made, then end the thread."""
        self._calls.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            loop, future, function = call
            if future.cancelled():  # one flag's read; it is set on the loop's thread only
                continue
            try:
                outcome: tuple[Any, BaseException | None] = (function(), None)
            except BaseException as error:  # the caller's to handle, as with the executor
                outcome = (None, error)
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, *outcome)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
