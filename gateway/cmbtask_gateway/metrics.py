"""Prometheus metrics, one registry per app so tests can run several apps."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric

__all__ = ["LoopCounter", "Metrics"]


class LoopCounter:
    """A counter only the event loop's thread touches: a plain integer.

    prometheus_client's counters take a mutex on every increment, and the
    delivered-events counter is incremented once per event per client."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self.value = 0
        registry.register(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation)
        family.add_metric([], self.value)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "cmbtask_ws_connections", "Open WebSocket connections", ["kind"], registry=self.registry
        )
        self.events_in = LoopCounter("cmbtask_events_stored", "Events stored", self.registry)
        self.events_out = LoopCounter(
            "cmbtask_events_delivered", "Events sent to client sockets", self.registry
        )
        self.slow_consumers = Counter(
            "cmbtask_slow_consumers", "Clients disconnected for falling behind", registry=self.registry
        )
        self.approvals_pending = Gauge(
            "cmbtask_approvals_pending", "Approvals waiting for a decision", registry=self.registry
        )
        self.tasks = Gauge("cmbtask_tasks", "Tasks by phase", ["phase"], registry=self.registry)
        # Leaks show here first: a socket that ends must take its tasks with it.
        self.asyncio_tasks = Gauge(
            "cmbtask_asyncio_tasks", "asyncio tasks alive in the gateway process", registry=self.registry
        )
        self.http_requests = Counter(
            "cmbtask_http_requests", "HTTP requests", ["method", "status"], registry=self.registry
        )
