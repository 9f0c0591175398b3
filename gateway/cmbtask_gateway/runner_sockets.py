"""Connected runner sockets, by task id: how the gateway reaches a runner.

A runner that is not connected misses nothing: decisions are re-sent when it
says ``hello`` again, and cancellation also goes through the executor.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

from .logs import get_logger

__all__ = ["RunnerConnection", "RunnerRegistry"]

log = get_logger(__name__)


class RunnerConnection(Protocol):
    async def send_frame(self, frame: BaseModel) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class RunnerRegistry:
    def __init__(self) -> None:
        self._connections: dict[str, RunnerConnection] = {}

    def attach(self, task_id: str, connection: RunnerConnection) -> RunnerConnection | None:
        """Register ``connection``; return the one it replaces, if any."""
        previous = self._connections.get(task_id)
        self._connections[task_id] = connection
        return previous

    def detach(self, task_id: str, connection: RunnerConnection) -> None:
        if self._connections.get(task_id) is connection:
            del self._connections[task_id]

    def is_connected(self, task_id: str) -> bool:
        return task_id in self._connections

    def __len__(self) -> int:
        return len(self._connections)

    async def send(self, task_id: str, frame: BaseModel) -> bool:
        connection = self._connections.get(task_id)
        if connection is None:
            return False
        try:
            await connection.send_frame(frame)
        except Exception as error:
            # The runner is told again on its next hello; say why it was not now.
            log.warning("runner.send_failed", task_id=task_id, frame=type(frame).__name__, error=repr(error))
            return False
        return True
