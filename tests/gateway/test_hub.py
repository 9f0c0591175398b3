"""The hub on its own: fan-out per session, a bound per subscriber, pokes."""

from __future__ import annotations

from cmbtask_gateway.hub import Delivery, Hub, Poke, Stored
from cmbtask_gateway.inbox import Inbox
from cmbtask_gateway.metrics import Metrics


def _drain(queue: Inbox[Delivery]) -> list[Delivery]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_events_reach_every_subscriber_of_their_session_only() -> None:
    hub = Hub(queue_size=10, metrics=Metrics())
    first, second, other = hub.subscribe("s1"), hub.subscribe("s1"), hub.subscribe("s2")
    hub.publish("s1", [Stored(1, "a", b""), Stored(2, "b", b"")])
    assert _drain(first.queue) == _drain(second.queue) == [Stored(1, "a", b""), Stored(2, "b", b"")]
    assert _drain(other.queue) == []
    assert hub.subscriber_count() == 3 and hub.subscriber_count("s1") == 2


def test_a_subscriber_that_does_not_keep_up_is_marked_and_skipped() -> None:
    metrics = Metrics()
    hub = Hub(queue_size=2, metrics=metrics)
    slow, fast = hub.subscribe("s1"), hub.subscribe("s1")
    # One batch may exceed the bound.
    hub.publish("s1", [Stored(1, "a", b""), Stored(2, "b", b""), Stored(3, "c", b"")])
    _drain(fast.queue)
    hub.publish("s1", [Stored(4, "d", b"")])
    assert slow.overflowed and not fast.overflowed
    assert slow.queue.qsize() == 3, "nothing more is queued for an overflowed subscriber"
    assert _drain(fast.queue) == [Stored(4, "d", b"")]


def test_a_poke_is_its_own_item_and_unsubscribing_forgets_the_session() -> None:
    hub = Hub(queue_size=10, metrics=Metrics())
    subscriber = hub.subscribe("s1")
    hub.poke("s1", 7)
    [item] = _drain(subscriber.queue)
    assert isinstance(item, Poke) and item.last_seq == 7 and not isinstance(item, Stored)
    hub.unsubscribe(subscriber)
    hub.unsubscribe(subscriber)  # twice is harmless
    assert hub.subscriber_count("s1") == 0
    hub.publish("s1", [Stored(8, "x", b"")])
    assert _drain(subscriber.queue) == []
