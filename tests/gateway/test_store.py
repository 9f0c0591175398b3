"""The event store on a real database: gap-free seqs from concurrent writers
(single transactions and group commits mixed), nothing numbered or published
for a rolled-back change, callbacks only after commit, bounded pages."""

from __future__ import annotations

import asyncio

import pytest
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.hub import Stored
from cmbtask_protocol import SessionCreate


@pytest.fixture
def gateway(built_gateway: Gateway) -> Gateway:
    return built_gateway


async def _write(gateway: Gateway, session_id: str, text: str) -> None:
    async with gateway.store.write(session_id) as tx:
        tx.emit("output", {"stream": "stdout", "text": text})
        tx.emit("output", {"stream": "stdout", "text": text + "'"})


async def _group(gateway: Gateway, session_ids: list[str], text: str) -> None:
    async with gateway.store.write_group() as group:
        for session_id in session_ids:
            group.tx(session_id).emit("output", {"stream": "stdout", "text": text})


async def test_concurrent_writes_and_groups_number_without_gaps(gateway: Gateway) -> None:
    one = (await gateway.sessions.create("alice", SessionCreate(title="one"))).id
    two = (await gateway.sessions.create("alice", SessionCreate(title="two"))).id
    watcher = gateway.hub.subscribe(one)
    await asyncio.gather(
        *(_write(gateway, one, f"w{n}") for n in range(10)),
        *(_group(gateway, [one, two], f"g{n}") for n in range(10)),
    )
    stored = await gateway.store.page(one, 0, 1000)
    assert [event["seq"] for event in stored] == list(range(1, 31))
    assert [event["seq"] for event in await gateway.store.page(two, 0, 1000)] == list(range(1, 11))
    published = []
    while not watcher.queue.empty():
        item = watcher.queue.get_nowait()
        assert isinstance(item, Stored)
        published.append(item.seq)
    assert sorted(published) == list(range(1, 31)), "each stored event published once"
    # a write transaction's own events go out together and in order
    texts = {event["seq"]: event["data"]["text"] for event in stored}
    for seq, text in texts.items():
        if text.startswith("w") and not text.endswith("'"):
            assert texts[seq + 1] == text + "'"


async def test_a_rolled_back_write_takes_no_seq_and_runs_no_callback(gateway: Gateway) -> None:
    session_id = (await gateway.sessions.create("alice", SessionCreate(title="s"))).id
    watcher = gateway.hub.subscribe(session_id)
    called: list[str] = []
    with pytest.raises(RuntimeError):
        async with gateway.store.write(session_id) as tx:
            tx.emit("output", {"stream": "stdout", "text": "lost"})
            tx.after_commit(lambda: called.append("rolled back"))
            raise RuntimeError("changed my mind")
    async with gateway.store.write(session_id) as tx:
        tx.emit("output", {"stream": "stdout", "text": "kept"})
        tx.after_commit(lambda: called.append("committed"))
    assert [e["data"]["text"] for e in await gateway.store.page(session_id, 0, 10)] == ["kept"]
    assert (await gateway.store.page(session_id, 0, 10))[0]["seq"] == 1
    assert called == ["committed"]
    assert watcher.queue.qsize() == 1


async def test_pages_are_bounded_by_until(gateway: Gateway) -> None:
    session_id = (await gateway.sessions.create("alice", SessionCreate(title="s"))).id
    for n in range(3):
        await _write(gateway, session_id, str(n))
    assert [e["seq"] for e in await gateway.store.page(session_id, 1, 100, until=4)] == [2, 3, 4]
    assert [e["seq"] for e in await gateway.store.page(session_id, 4, 1)] == [5]
    assert await gateway.store.page(session_id, 6, 100) == []


async def test_sockets_that_open_together_each_get_their_own_start(gateway: Gateway) -> None:
    busy = (await gateway.sessions.create("alice", SessionCreate(title="busy"))).id
    quiet = (await gateway.sessions.create("bob", SessionCreate(title="quiet"))).id
    for n in range(3):
        await _write(gateway, busy, str(n))  # seqs 1..6
    # More unknown sessions than one statement looks up, opened all at once.
    unknown = [f"no-such-session-{n}" for n in range(1_100)]
    asked = [(busy, 0, 4), (busy, 4, 100), (busy, 6, 100), (quiet, 0, 100), (busy, 2, 0)]
    starts = await asyncio.gather(
        *(gateway.store.opening(*ask) for ask in asked),
        *(gateway.store.opening(session_id, 0, 10) for session_id in unknown),
    )
    first_pages = [
        [event["seq"] for event in start.page] if start else None for start in starts[: len(asked)]
    ]
    assert first_pages == [[1, 2, 3, 4], [5, 6], [], [], []]
    assert [(start.owner, start.last_seq) if start else None for start in starts[: len(asked)]] == [
        ("alice", 6),
        ("alice", 6),
        ("alice", 6),
        ("bob", 0),
        ("alice", 6),
    ]
    assert starts[len(asked) :] == [None] * len(unknown)
