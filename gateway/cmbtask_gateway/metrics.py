"""Prometheus metrics, one registry per app so tests can run several apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "cmbtask_ws_connections", "Open WebSocket connections", ["kind"], registry=self.registry
        )
        self.events_in = Counter("cmbtask_events_stored", "Events stored", registry=self.registry)
        self.events_out = Counter(
            "cmbtask_events_delivered", "Events sent to client sockets", registry=self.registry
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
