"""Calls made while one is in flight go together in the next: each caller
gets its own result, an item's failure is its own, a failed batch fails
every caller in it and not the next batch, a cancelled sender leaves the
others of its batch answered."""

from __future__ import annotations

import asyncio

import pytest
from cmbtask_gateway.coalescing import Coalescing


async def test_calls_queued_behind_one_in_flight_go_together_with_their_own_results() -> None:
    batches: list[list[int]] = []

    async def run(items: list[int]) -> list[int | Exception]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return [ValueError(f"no {n}") if n == 3 else n * 10 for n in items]

    double = Coalescing(run)
    results = await asyncio.gather(*(double(n) for n in range(5)), return_exceptions=True)
    assert batches == [[0], [1, 2, 3, 4]]
    assert results[:3] == [0, 10, 20] and results[4] == 40
    assert isinstance(results[3], ValueError) and str(results[3]) == "no 3"


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    calls = 0

    async def run(items: list[str]) -> list[str | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("server gone")
        return [item.upper() for item in items]

    upper = Coalescing(run)
    with pytest.raises(OSError, match="server gone"):
        await upper("a")
    assert await upper("b") == "B"


async def test_a_cancelled_sender_leaves_the_others_of_its_batch_answered() -> None:
    gates = [asyncio.Event(), asyncio.Event()]  # one per batch, opened by the test
    in_flight: list[list[int]] = []

    async def run(items: list[int]) -> list[int | Exception]:
        in_flight.append(items)
        await gates[len(in_flight) - 1].wait()
        return [n + 1 for n in items]

    increment = Coalescing(run)
    first = asyncio.create_task(increment(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(increment(2))  # queued behind the first: the next batch
    third = asyncio.create_task(increment(3))
    await asyncio.sleep(0)
    gates[0].set()
    assert await first == 2
    for _ in range(100):
        if len(in_flight) == 2:
            break
        await asyncio.sleep(0)
    assert in_flight == [[1], [2, 3]]  # sent by the second caller, which is now cancelled
    second.cancel()
    await asyncio.sleep(0)
    gates[1].set()
    assert await asyncio.wait_for(third, 5) == 4
    assert second.cancelled()
