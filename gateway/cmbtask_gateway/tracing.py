"""OpenTelemetry traces of a task's way through the gateway, off unless configured.

Off (the default) the SDK is never imported, no provider is installed, and
each traced place costs one ``None`` check: the hot path (ingest, fan-out)
checks once per event group, never per event or per delivery. On — when the
standard ``OTEL_*`` environment asks for OTLP (``tracing_configured``) — spans
go out over OTLP/HTTP:

    POST /api/sessions/{id}/tasks          (``http_tracing``)
    └─ task.submit                         (stores the trace context with the task)
       ├─ store.write, hub.fanout          (its ``task.queued`` event)
       ├─ task.launch                      (dispatcher; any replica, any attempt)
       │  └─ runner                        (the runner process, from ``TRACEPARENT``)
       │     └─ engine.run └─ step N
       └─ ingest.commit                    (one per group of runner frames)
          ├─ store.write └─ hub.fanout

A group commit carries many tasks' frames: its span sits in the trace of the
first and links to the others' (OpenTelemetry's batch pattern); its
``cmbtask.task_ids`` attribute names them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import structlog
from cmbtask_protocol import tracing_configured
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

__all__ = [
    "add_trace_id",
    "child_span",
    "configure",
    "context_of",
    "current_traceparent",
    "enabled",
    "flush",
    "group_span",
    "install",
    "span",
    "tracer",
    "uninstall",
]

log = structlog.get_logger("cmbtask_gateway.tracing")

_SERVICE = "cmbtask-gateway"
#: a group span links at most this many tasks' traces (a bound on its size)
MAX_LINKS = 64
_propagator = TraceContextTextMapPropagator()
_tracer: Tracer | None = None
#: the installed SDK provider's flush, when ``configure`` installed one
_flush: Callable[[int], bool] | None = None
_FLUSH_TIMEOUT_MS = 5000


def configure(env: Mapping[str, str] = os.environ) -> bool:
    """Install the SDK with an OTLP/HTTP exporter if ``env`` asks for it (once
    per process; the exporter reads its endpoint, headers and timeout from the
    same standard variables). Returns whether tracing is on."""
    global _flush
    if _tracer is not None:
        return True
    if not tracing_configured(env):
        return False
    # Imported here: a gateway that does not trace never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or _SERVICE})
    provider = SdkTracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    install(provider)
    _flush = provider.force_flush
    log.info("tracing.on", exporter="otlp/http", service=resource.attributes.get("service.name"))
    return True


def flush() -> None:
    """Send the spans still queued (at gateway stop; bounded, so a collector
    that is down delays a shutdown by seconds at most)."""
    if _flush is not None and not _flush(_FLUSH_TIMEOUT_MS):
        log.warning("tracing.flush_timed_out", timeout_ms=_FLUSH_TIMEOUT_MS)


def install(provider: TracerProvider) -> None:
    """Trace with ``provider`` (tests pass one with an in-memory exporter)."""
    global _tracer
    _tracer = provider.get_tracer("cmbtask.gateway")


def uninstall() -> None:
    global _tracer
    _tracer = None


def enabled() -> bool:
    return _tracer is not None


def tracer() -> Tracer | None:
    return _tracer


def context_of(traceparent: str | None) -> Context | None:
    """The context a stored W3C ``traceparent`` names (None: none, or tracing off)."""
    if _tracer is None or not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, to store or hand on."""
    if _tracer is None:
        return None
    carrier: MutableMapping[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


#: what each traced place gets while tracing is off: one shared, reusable no-op
#: (a generator-based context manager per call costs several times more)
_OFF: AbstractContextManager[None] = nullcontext()


def span(
    name: str, *, parent: Context | None = None, attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[Span | None]:
    """A span made current for the block (None when tracing is off)."""
    if _tracer is None:
        return _OFF
    return _tracer.start_as_current_span(name, context=parent, attributes=attributes)


def child_span(name: str) -> AbstractContextManager[Span | None]:
    """A span only under a recording one: the store's writes show in the traces
    of requests and commits, and start none of their own (the sweeper's)."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return _OFF
    return _tracer.start_as_current_span(name)


def group_span(
    name: str, contexts: Sequence[Context | None], task_ids: Iterable[str]
) -> AbstractContextManager[Span | None]:
    """One span for a group of items of several traces: a child in the first
    traced item's trace, linked to the others'. None when no item is traced."""
    if _tracer is None:
        return _OFF
    traced = [trace.get_current_span(context).get_span_context() for context in contexts if context]
    if not traced:
        return _OFF
    first = traced[0]
    seen = {first.span_id}
    links: list[Link] = []
    for other in traced[1:]:
        if other.span_id not in seen and len(links) < MAX_LINKS:
            seen.add(other.span_id)
            links.append(Link(other))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(first))
    attributes: dict[str, AttributeValue] = {
        "cmbtask.task_ids": sorted(set(task_ids)),
        "cmbtask.batches": len(contexts),
    }
    return _tracer.start_as_current_span(name, context=parent, links=links, attributes=attributes)


def add_trace_id(_: object, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current trace id on each line, while tracing is on."""
    if _tracer is not None:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
    return event_dict
