"""A subscriber's inbox: order, a reader that waits, a reader cancelled while
waiting, and one reader at a time."""

from __future__ import annotations

import asyncio

import pytest
from cmbtask_gateway.inbox import Inbox


async def test_items_come_out_in_the_order_they_were_put() -> None:
    inbox: Inbox[int] = Inbox()
    for item in range(5):
        inbox.put_nowait(item)
    assert inbox.qsize() == 5
    assert [await inbox.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert inbox.empty()
    with pytest.raises(asyncio.QueueEmpty):
        inbox.get_nowait()


async def test_a_reader_waits_until_an_item_is_put() -> None:
    inbox: Inbox[str] = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0.01)
    assert not reader.done()
    inbox.put_nowait("first")
    inbox.put_nowait("second")
    assert await asyncio.wait_for(reader, 1) == "first"
    assert inbox.get_nowait() == "second"


async def test_a_reader_cancelled_after_the_wake_up_leaves_the_item_for_the_next() -> None:
    inbox: Inbox[str] = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("kept")  # wakes the reader, which is cancelled before it runs
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert await asyncio.wait_for(inbox.get(), 1) == "kept"


async def test_a_second_reader_at_the_same_time_is_refused() -> None:
    inbox: Inbox[int] = Inbox()
    first = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one reader"):
        await inbox.get()
    inbox.put_nowait(7)
    assert await asyncio.wait_for(first, 1) == 7
