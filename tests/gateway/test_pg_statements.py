"""PostgreSQL's hot statements keep the guarantees of the ones they replaced.

The numbering is one fixed statement that locks the sessions in id order
before it updates any (two replicas' groups sharing sessions must not
deadlock), and reads that arrive together share one transaction, a failing
one failing alone.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.db.models import Session
from cmbtask_gateway.db.transactions import AsyncEngineTransactions
from sqlalchemy import Connection
from sqlalchemy.engine import make_url


@pytest.fixture
def gateway(database_url: str, built_gateway: Gateway) -> Gateway:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer and no row locks; these are PostgreSQL's statements")
    return built_gateway


def _dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _sessions(gateway: Gateway, count: int) -> list[str]:
    ids = sorted(str(uuid.uuid4()) for _ in range(count))
    async with gateway.sessions_factory.begin() as db:
        db.add_all(Session(id=id_, owner="ada", title="t", mode="one-shot", last_seq=0) for id_ in ids)
    return ids


async def _locked_elsewhere(connection: asyncpg.Connection, session_id: str) -> bool:
    try:
        async with connection.transaction():
            await connection.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE NOWAIT", session_id)
    except asyncpg.LockNotAvailableError:
        return True
    return False


async def test_numbering_locks_sessions_in_id_order_before_it_waits(
    database_url: str, gateway: Gateway
) -> None:
    first, second = await _sessions(gateway, 2)
    holder = await asyncpg.connect(_dsn(database_url))
    probe = await asyncpg.connect(_dsn(database_url))
    try:
        # The lower id moves to the end of the heap: a plain UPDATE's scan
        # would now reach (and lock) the higher id first.
        await holder.execute("UPDATE sessions SET title = 'moved' WHERE id = $1", first)
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", second)

        def number_both(connection: Connection, number: Any) -> tuple[dict[str, int], dict[str, Any]]:
            return number(connection, {second: 2, first: 3}), {}

        numbering = asyncio.create_task(gateway.store.write_rows(number_both))
        for _ in range(200):  # it waits on the second id, holding the first
            if await _locked_elsewhere(probe, first):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the numbering did not lock the lower id while it waited for the higher")
        assert not numbering.done()
        await transaction.commit()
        assert await asyncio.wait_for(numbering, 10) == {first: 3, second: 2}
        assert not await _locked_elsewhere(probe, first)
    finally:
        await holder.close()
        await probe.close()


async def test_reads_that_arrive_together_share_a_transaction(gateway: Gateway) -> None:
    reads = AsyncEngineTransactions(gateway.engine)

    def transaction_id(connection: Connection) -> int:
        return int(connection.exec_driver_sql("SELECT txid_current()").scalar_one())

    ids = await asyncio.gather(*(reads.read(transaction_id) for _ in range(12)))
    # The first goes alone; the rest queued while it ran, and went as one.
    assert len(set(ids)) == 2, ids


async def test_a_read_that_fails_fails_alone(gateway: Gateway) -> None:
    reads = AsyncEngineTransactions(gateway.engine)

    def value(number: int) -> Any:
        return lambda connection: connection.exec_driver_sql(f"SELECT {number}").scalar_one()

    def broken(connection: Connection) -> Any:
        return connection.exec_driver_sql("SELECT 1 / 0").scalar_one()

    works = [value(1), value(2), broken, value(4)]
    results = await asyncio.gather(*(reads.read(work) for work in works), return_exceptions=True)
    assert results[0] == 1 and results[1] == 2 and results[3] == 4
    assert isinstance(results[2], Exception) and "division by zero" in str(results[2])
