"""Per-session fan-out of stored events to connected clients.

Each client has one bounded queue and one sender task, so a slow socket only
ever fills its own queue: when it is full the client is marked overflowed and
disconnected (close 4408), and it replays from its cursor on reconnect. The
publisher never awaits a socket. Each event is serialised once, not once per
client.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from .inbox import Inbox
from .metrics import Metrics

__all__ = ["Beat", "Delivery", "Hub", "Poke", "Stored", "Subscriber"]


class Stored(NamedTuple):
    """An event this process stored: its ``seq``, its envelope's JSON and that
    JSON as a server text frame (``wire_frames``), the same for every client."""

    seq: int
    text: str
    frame: bytes


class Poke(NamedTuple):
    """Events up to ``last_seq`` were stored by another replica: the receiver
    reads them from the database."""

    last_seq: int


class Beat(NamedTuple):
    """Nothing was sent for a heartbeat interval: the receiver sends a
    heartbeat (queued by the receiver's own timer, never by the hub)."""


#: What a subscriber's queue holds. Items may arrive out of ``seq`` order (a
#: poke can trail this process's own later events); the receiver restores it.
Delivery = Stored | Poke | Beat


@dataclass(eq=False)
class Subscriber:
    session_id: str
    queue: Inbox[Delivery] = field(default_factory=Inbox)
    #: set once, when its queue was full; nothing more is queued for it
    overflowed: bool = False
    #: called once when the subscriber overflows (its socket stops its sender);
    #: a callback, not a task waiting on ``overflowed``: one task less per socket
    on_overflow: Callable[[], object] | None = None


class Hub:
    def __init__(self, queue_size: int, metrics: Metrics) -> None:
        self._queue_size = queue_size
        self._metrics = metrics
        self._subscribers: defaultdict[str, set[Subscriber]] = defaultdict(set)

    def subscribe(self, session_id: str) -> Subscriber:
        # Unbounded in itself; ``publish`` enforces the bound per batch.
        subscriber = Subscriber(session_id)
        self._subscribers[session_id].add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        group = self._subscribers.get(subscriber.session_id)
        if group is None:
            return
        group.discard(subscriber)
        if not group:
            del self._subscribers[subscriber.session_id]

    def session_ids(self) -> list[str]:
        """The sessions someone here watches."""
        return list(self._subscribers)

    def subscriber_count(self, session_id: str | None = None) -> int:
        if session_id is not None:
            return len(self._subscribers.get(session_id, ()))
        return sum(len(group) for group in self._subscribers.values())

    def poke(self, session_id: str, last_seq: int) -> None:
        """Events up to ``last_seq`` were stored elsewhere: subscribers read them
        from the database."""
        self.publish(session_id, [Poke(last_seq)])

    def publish(self, session_id: str, events: Sequence[Delivery]) -> None:
        """Queue ``events`` for every subscriber of the session."""
        for subscriber in tuple(self._subscribers.get(session_id, ())):
            if subscriber.overflowed:
                continue
            # A client is too slow when it has not taken what it was given,
            # not when one stored batch (up to hundreds of events) is larger
            # than the queue: the backlog stays under the size plus one batch.
            if subscriber.queue.qsize() >= self._queue_size:
                subscriber.overflowed = True
                self._metrics.slow_consumers.inc()
                if subscriber.on_overflow is not None:
                    subscriber.on_overflow()
                continue
            for item in events:
                subscriber.queue.put_nowait(item)
