"""Live events across gateway replicas that share one PostgreSQL database.

Each replica's hub only sees the events it stored itself. When an event is
stored, the same statement that numbers it sends ``NOTIFY cmbtask_events,
'<replica> <session> <last seq>'``; every other replica LISTENs and pokes its local
subscribers of that session, which read the new events from the database
(the same gap-filling path a reconnecting client takes). PostgreSQL delivers
notifications only on commit, so a poke never points at invisible rows.

A notification sent while a replica is not listening (PostgreSQL restarted,
the connection broke) is never delivered to it. So each time the relay
listens again it reads the ``last_seq`` of every session its clients watch
and pokes them: whatever was stored meanwhile reaches them without waiting
for a later event. Until then the replica is not ready (``listening``): its
clients would not hear the other replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from .hub import Hub
from .logs import get_logger

__all__ = ["CHANNEL", "PgRelay"]

CHANNEL = "cmbtask_events"
#: reconnect attempts back off up to this: short, as the replica is unready meanwhile
MAX_RETRY_S = 2.0
#: a quiet LISTEN connection is checked this often: a dead peer sends no FIN
CHECK_EVERY_S = 5.0
log = get_logger(__name__)


class PgRelay:
    def __init__(self, database_url: str, hub: Hub) -> None:
        self.replica = uuid.uuid4().hex[:12]
        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._hub = hub
        self._task: asyncio.Task[None] | None = None
        #: LISTENing, and caught up with what was stored before it listened
        self.listening = False

    @property
    def prefix(self) -> str:
        """What this replica's notifications start with."""
        return f"{self.replica} "

    @staticmethod
    def announcement_sql(prefix_param: str, session_id: str, last_seq: str) -> str:
        """SQL for the storing ``UPDATE … RETURNING``: it tells the other
        replicas in the same round trip (delivered on commit); ``prefix_param``
        is the placeholder bound to ``prefix``."""
        return f"pg_notify('{CHANNEL}', {prefix_param} || {session_id} || ' ' || {last_seq}::text)"

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
        delay = 0.25
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await self._listen_once()
                log.warning("relay.connection_lost")
            except Exception as error:  # whatever broke, the relay must live on
                log.warning("relay.connect_failed", error=str(error) or type(error).__name__, retry_s=delay)
            finally:
                self.listening = False
            if asyncio.get_running_loop().time() - started > 30:
                delay = 0.25  # it had been working: retry soon
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)

    async def _listen_once(self) -> None:
        """Listen until the connection drops."""
        connection = await asyncpg.connect(self._dsn, timeout=5)
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._on_notify)
            await self._catch_up(connection)
            self.listening = True
            log.info("relay.listening", replica=self.replica)
            while True:
                try:
                    await asyncio.wait_for(lost.wait(), CHECK_EVERY_S)
                    return
                except TimeoutError:
                    await connection.fetchval("SELECT 1", timeout=5)  # raises if the peer is gone
        finally:
            connection.terminate()  # no goodbye: the connection is dead or unwanted

    async def _catch_up(self, connection: asyncpg.Connection) -> None:
        """Poke the watched sessions with what is stored now: events numbered
        before the LISTEN may never have been announced to this replica."""
        watched = self._hub.session_ids()
        if not watched:
            return
        rows = await connection.fetch(
            "SELECT id, last_seq FROM sessions WHERE id = ANY($1::varchar[])", watched, timeout=10
        )
        for row in rows:
            self._hub.poke(row["id"], row["last_seq"])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
