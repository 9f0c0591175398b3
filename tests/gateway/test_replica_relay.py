"""The replica relay catches up each time it listens, and says whether it does.

A notification sent while a replica was not listening is lost for good; the
relay reads what its watched sessions hold instead (the end-to-end case, with
PostgreSQL restarted, is in ``test_failover.py``).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.db.models import Session
from cmbtask_gateway.hub import Poke
from cmbtask_gateway.replica_relay import PgRelay


async def _listening(relay: PgRelay, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if relay.listening:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"the relay did not listen within {timeout_s} s")


async def test_listening_again_pokes_watched_sessions_with_what_is_stored(
    database_url: str, built_gateway: Gateway
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("the relay is PostgreSQL's LISTEN/NOTIFY; SQLite runs one gateway")
    async with built_gateway.sessions_factory.begin() as db:
        watched = Session(id=str(uuid.uuid4()), owner="ada", title="watched", mode="one-shot", last_seq=7)
        unwatched = Session(
            id=str(uuid.uuid4()), owner="ada", title="nobody here", mode="one-shot", last_seq=3
        )
        db.add_all([watched, unwatched])
    subscriber = built_gateway.hub.subscribe(watched.id)
    relay = PgRelay(database_url, built_gateway.hub)
    assert not relay.listening  # not ready before it hears the others
    await relay.start()
    try:
        await _listening(relay)
        # Events numbered before it listened may never reach it as notifications.
        assert subscriber.queue.get_nowait() == Poke(7)
        assert subscriber.queue.empty()
        assert built_gateway.hub.subscriber_count(unwatched.id) == 0
    finally:
        await relay.close()
    assert not relay.listening
