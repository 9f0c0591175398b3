"""What the database holds, read directly (not through a gateway), so that a
test compares what clients saw with the truth and not with another copy of it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url

__all__ = ["StoredState"]

FINAL = {"succeeded", "failed", "cancelled", "timed_out"}


class StoredState:
    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self._params: dict[str, Any] = {
            "host": url.host,
            "port": url.port,
            "user": url.username,
            "password": url.password,
            "dbname": url.database,
            "connect_timeout": 5,
        }

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        connection = psycopg2.connect(**self._params)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
        finally:
            connection.close()

    def phases(self, task_ids: Iterable[str]) -> dict[str, str]:
        rows = self._query("SELECT id, phase FROM tasks WHERE id = ANY(%s)", (list(task_ids),))
        return {task_id: phase for task_id, phase in rows}

    def wait_phases(
        self, task_ids: list[str], done: Callable[[str], bool], timeout_s: float, what: str
    ) -> float:
        """Wait until every task's phase satisfies ``done``; the seconds it took."""
        started = time.monotonic()
        while True:
            phases = self.phases(task_ids)
            if len(phases) == len(task_ids) and all(done(phase) for phase in phases.values()):
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                counts: dict[str, int] = {}
                for phase in phases.values():
                    counts[phase] = counts.get(phase, 0) + 1
                raise TimeoutError(f"tasks not {what} after {timeout_s} s: {counts}")
            time.sleep(0.25)

    def events(self, session_id: str) -> list[dict[str, Any]]:
        """A session's events as clients get them (the envelope's fields that carry meaning)."""
        rows = self._query(
            "SELECT seq, type, task_id, data FROM events WHERE session_id = %s ORDER BY seq", (session_id,)
        )
        return [{"seq": seq, "type": type_, "task_id": task, "data": data} for seq, type_, task, data in rows]

    def last_seqs(self, session_ids: list[str]) -> dict[str, int]:
        rows = self._query("SELECT id, last_seq FROM sessions WHERE id = ANY(%s)", (session_ids,))
        return {session_id: last for session_id, last in rows}

    def repeated_rseqs(self) -> list[tuple[str, int, int]]:
        """``(task_id, rseq, times)`` stored more than once: none, if ingest is exactly-once."""
        return [
            (task_id, rseq, count)
            for task_id, rseq, count in self._query(
                "SELECT task_id, rseq, count(*) FROM events WHERE rseq IS NOT NULL "
                "GROUP BY task_id, rseq HAVING count(*) > 1"
            )
        ]

    def output_text(self, task_id: str) -> str:
        rows = self._query(
            "SELECT data FROM events WHERE task_id = %s AND type = 'output' ORDER BY seq", (task_id,)
        )
        return "".join(data["text"] for (data,) in rows if data.get("stream") == "stdout")
