"""The runner's OpenTelemetry spans, in the trace of the gateway's launch.

The gateway hands the runner its launch span's context as ``TRACEPARENT``;
the runner's own work hangs under it, so a slow task reads as one trace from
the REST request to the engine's steps:

    task.launch (gateway) └─ runner └─ engine.run └─ step N

Tracing is on when the standard ``OTEL_*`` variables ask for OTLP
(``tracing_configured``), the same rule the gateway follows; spans go out
over OTLP/HTTP, flushed before the process exits (it ends with ``os._exit``,
which would drop a batch still queued). Off, the SDK is never imported and
the engine's events pass one ``None`` check.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from cmbtask_protocol import ENV_TRACEPARENT, EventType, tracing_configured
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

__all__ = ["StepSpans", "error_status", "flush", "log_fields", "runner_span", "span", "start", "step_spans"]

log = structlog.get_logger("cmbtask_runner.tracing")

_SERVICE = "cmbtask-runner"
_FLUSH_TIMEOUT_MS = 5000
_tracer: Tracer | None = None
_flush: Callable[[], None] | None = None
_log_fields: dict[str, str] = {}


def start(env: Mapping[str, str] = os.environ) -> bool:
    """Install the SDK with an OTLP/HTTP exporter if ``env`` asks for it. A
    runner whose tracing cannot be set up still runs its task, untraced."""
    if _tracer is not None or not tracing_configured(env):
        return _tracer is not None
    try:
        _install(env)
    except Exception:
        log.warning("tracing.unavailable", exc_info=True)
    return _tracer is not None


def _install(env: Mapping[str, str]) -> None:
    global _tracer, _flush
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or _SERVICE})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("cmbtask.runner")

    def send_queued() -> None:
        # Bounded: a collector that is down delays the exit by this much at most.
        # No shutdown after it: the process ends with os._exit right away.
        if not provider.force_flush(_FLUSH_TIMEOUT_MS):
            log.warning("tracing.flush_timed_out", timeout_ms=_FLUSH_TIMEOUT_MS)

    _flush = send_queued


def flush() -> None:
    """Send what is queued; the runner calls this last, before it exits."""
    global _flush
    if _flush is not None:
        try:
            _flush()
        except Exception:  # a collector that is down must not change how the task ended
            log.warning("tracing.flush_failed", exc_info=True)
        _flush = None


@contextmanager
def runner_span(task_id: str, env: Mapping[str, str] = os.environ) -> Iterator[Span | None]:
    """The runner's whole life, a child of the launch span named by ``TRACEPARENT``."""
    if _tracer is None:
        yield None
        return
    parent = TraceContextTextMapPropagator().extract({"traceparent": env.get(ENV_TRACEPARENT, "")})
    attributes: dict[str, AttributeValue] = {"cmbtask.task_id": task_id, "process.pid": os.getpid()}
    with _tracer.start_as_current_span("runner", context=parent, attributes=attributes) as current:
        _log_fields["trace_id"] = format(current.get_span_context().trace_id, "032x")
        yield current


def log_fields() -> dict[str, str]:
    """``{"trace_id": …}`` once the runner span exists: every log line of the
    runner names its trace, one grep from a trace to the logs."""
    return dict(_log_fields)


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span | None]:
    """A child of the current span (None when tracing is off)."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


def error_status(error: BaseException) -> Status:
    return Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200])


class StepSpans:
    """A span per engine step, opened and closed by the step events the engine
    emits (from its own thread), under the span current when it was made."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._parent = otel_context.get_current()
        self._open: dict[object, Span] = {}
        self._lock = threading.Lock()

    def __call__(self, event_type: str, data: Mapping[str, Any]) -> None:
        if not event_type.startswith("step."):
            return
        with self._lock:
            if event_type == EventType.STEP_STARTED:
                self._started(data)
            elif event_type in (EventType.STEP_COMPLETED, EventType.STEP_FAILED):
                opened = self._open.pop(data.get("step"), None)
                if opened is not None:
                    if event_type == EventType.STEP_FAILED:
                        opened.set_status(Status(StatusCode.ERROR, str(data.get("error", ""))))
                    opened.end()

    def _started(self, data: Mapping[str, Any]) -> None:
        step = data.get("step")
        attributes: dict[str, AttributeValue] = {
            "cmbtask.step": int(step or 0),
            "cmbtask.step_title": str(data.get("title", "")),
        }
        self._open[step] = self._tracer.start_span(
            f"step {step}", context=self._parent, attributes=attributes
        )

    def close(self) -> None:
        """End the steps an engine left open (it failed or was cancelled mid-step)."""
        with self._lock:
            for opened in self._open.values():
                opened.set_status(Status(StatusCode.ERROR, "the engine ended mid-step"))
                opened.end()
            self._open.clear()


def step_spans() -> StepSpans | None:
    return StepSpans(_tracer) if _tracer is not None else None
