"""The SQLite transactions' thread: in order, errors to the caller, cancels honoured."""

from __future__ import annotations

import asyncio
import threading

import pytest
from cmbtask_gateway.db.worker_thread import WorkerThread


async def test_calls_run_in_order_on_the_one_thread() -> None:
    worker = WorkerThread("test-worker")
    seen: list[tuple[int, str]] = []

    def record(number: int) -> int:
        seen.append((number, threading.current_thread().name))
        return number * 10

    try:
        results = await asyncio.gather(*(worker.call(lambda n=n: record(n)) for n in range(20)))
    finally:
        worker.stop()
    assert results == [n * 10 for n in range(20)]
    assert seen == [(n, "test-worker") for n in range(20)]


async def test_an_error_reaches_the_caller_and_the_thread_goes_on() -> None:
    worker = WorkerThread("test-worker")

    def fail() -> None:
        raise LookupError("no such row")

    try:
        with pytest.raises(LookupError, match="no such row"):
            await worker.call(fail)
        assert await worker.call(lambda: "still serving") == "still serving"
    finally:
        worker.stop()


class _Gate:
    """A call that holds the worker thread until it is released."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.finished = False

    def __call__(self) -> str:
        self.started.set()
        self.release.wait(10)
        self.finished = True
        return "gated"

    async def wait_started(self) -> None:
        await asyncio.to_thread(self.started.wait, 10)


async def test_a_call_cancelled_before_it_started_never_runs() -> None:
    worker, gate = WorkerThread("test-worker"), _Gate()
    ran: list[str] = []
    first = asyncio.create_task(worker.call(gate))
    await gate.wait_started()
    second = asyncio.create_task(worker.call(lambda: ran.append("second")))
    await asyncio.sleep(0)  # the second call is queued behind the first
    second.cancel()
    gate.release.set()
    try:
        assert await first == "gated"
        with pytest.raises(asyncio.CancelledError):
            await second
        assert await worker.call(lambda: ran.append("third")) is None
    finally:
        worker.stop()
    assert ran == ["third"]


async def test_a_caller_cancelled_mid_call_drops_the_result_and_stop_waits_for_the_call() -> None:
    worker, gate = WorkerThread("test-worker"), _Gate()
    call = asyncio.create_task(worker.call(gate))
    await gate.wait_started()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    gate.release.set()
    await asyncio.to_thread(worker.stop)
    assert gate.finished  # it ran to its end; nobody got its result
