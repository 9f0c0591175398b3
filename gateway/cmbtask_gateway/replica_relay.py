"""Live events across gateway replicas that share one PostgreSQL database.

Each replica's hub only sees the events it stored itself. When an event is
stored, the same statement that numbers it sends ``NOTIFY cmbtask_events,
'<replica> <session> <last seq>'``; every other replica LISTENs and pokes its local
subscribers of that session, which read the new events from the database
(the same gap-filling path a reconnecting client takes). PostgreSQL delivers
notifications only on commit, so a poke never points at invisible rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import asyncpg
from sqlalchemy import ColumnElement, Text, cast, func, literal
from sqlalchemy.engine import make_url

from .hub import Hub
from .logs import get_logger

__all__ = ["CHANNEL", "PgRelay"]

CHANNEL = "cmbtask_events"
log = get_logger(__name__)


class PgRelay:
    def __init__(self, database_url: str, hub: Hub) -> None:
        self.replica = uuid.uuid4().hex[:12]
        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._hub = hub
        self._task: asyncio.Task[None] | None = None

    def announcement(
        self, session_id: ColumnElement[str], last_seq: ColumnElement[int]
    ) -> ColumnElement[Any]:
        """An expression for the storing ``UPDATE … RETURNING``: it tells the
        other replicas in the same round trip (delivered on commit)."""
        payload = literal(f"{self.replica} ") + session_id + " " + cast(last_seq, Text)
        return func.pg_notify(CHANNEL, payload)

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        replica, _, rest = payload.partition(" ")
        if replica == self.replica:
            return  # our own hub already has these events
        session_id, _, seq = rest.partition(" ")
        if seq.isdigit():
            self._hub.poke(session_id, int(seq))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="pg-relay")

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await self._listen_once()
                log.warning("relay.connection_lost")
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("relay.connect_failed", error=str(error), retry_s=delay)
            if asyncio.get_running_loop().time() - started > 30:
                delay = 0.5  # it had been working: retry soon
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _listen_once(self) -> None:
        """Listen until the connection drops."""
        connection = await asyncpg.connect(self._dsn)
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._on_notify)
            log.info("relay.listening", replica=self.replica)
            await lost.wait()
        finally:
            await connection.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
