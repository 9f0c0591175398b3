"""Traces of one demo task across processes.

The gateway runs in this process with the SDK's in-memory exporter; its local
executor starts a real runner process, which exports over OTLP/HTTP to a real
receiver here. The spans must form one trace: the REST request → task.submit →
task.launch → (runner process) runner → engine.run → step N, and the
gateway's ingest commits with their store and fan-out spans under the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cmbtask_gateway import tracing
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.otlp_receiver import ReceivedSpan, TraceReceiver
from tests.support.served import served

DEMO = {"steps": 2, "step_delay_s": 0.05, "lines_per_step": 3}


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[TraceReceiver]:
    """Where the runners send their spans: the local executor passes the
    gateway's OTEL_* environment on to them."""
    with TraceReceiver() as running:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", running.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        yield running


async def _run_demo(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        session = (await http.post("/api/sessions", json={"title": "traced"})).json()["id"]
        created = await http.post(f"/api/sessions/{session}/tasks", json={"engine": "demo", "params": DEMO})
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        for _ in range(300):
            phase = (await http.get(f"/api/tasks/{task_id}")).json()["phase"]
            if phase in {"succeeded", "failed", "cancelled", "timed_out"}:
                break
            await asyncio.sleep(0.1)
        assert phase == "succeeded"
    return str(task_id)


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [span.name for span in spans])
    return found[0]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _hex(number: int, width: int) -> str:
    return format(number, f"0{width}x")


async def test_a_demo_task_is_one_trace_across_gateway_and_runner(
    database_url: str, tmp_path: Path, exported: InMemorySpanExporter, receiver: TraceReceiver
) -> None:
    async with served(
        database_url, tmp_path / "data", watchdog_interval_s=0.3, describe_engines_refresh_s=0
    ) as url:
        task_id = await _run_demo(url)
        runner_spans = await asyncio.to_thread(receiver.wait_for, "step 2")
    spans = list(exported.get_finished_spans())
    request = _one(spans, "POST /api/sessions/{session_id}/tasks")
    submit, launch = _one(spans, "task.submit"), _one(spans, "task.launch")
    assert request.kind is SpanKind.SERVER and request.attributes["http.response.status_code"] == 201
    trace_id = request.context.trace_id
    assert _parent_id(submit) == request.context.span_id
    assert submit.attributes["cmbtask.task_id"] == task_id
    assert launch.context.trace_id == trace_id and _parent_id(launch) == submit.context.span_id
    # the queued event: stored and fanned out within the submit
    under_submit = {span.name for span in spans if _parent_id(span) == submit.context.span_id}
    assert {"store.write", "hub.fanout", "task.launch"} <= under_submit, under_submit
    _assert_ingest(spans, trace_id, submit, task_id)
    _assert_runner(receiver.spans, trace_id, launch)
    assert runner_spans


def _assert_ingest(spans: list[ReadableSpan], trace_id: int, submit: ReadableSpan, task_id: str) -> None:
    commits = [span for span in spans if span.name == "ingest.commit"]
    assert commits, "no ingest span"
    for commit in commits:
        assert commit.context.trace_id == trace_id and _parent_id(commit) == submit.context.span_id
        assert task_id in commit.attributes["cmbtask.task_ids"]
    frames = sum(int(commit.attributes["cmbtask.frames"]) for commit in commits)
    assert frames >= 7, frames  # started, plan, two steps' start and end, final
    ids = {commit.context.span_id for commit in commits}
    stores = [s for s in spans if s.name == "store.write" and _parent_id(s) in ids]
    fanouts = [s for s in spans if s.name == "hub.fanout" and _parent_id(s) in ids]
    assert len(stores) >= len(commits), "every commit writes"
    assert sum(int(span.attributes["cmbtask.events"]) for span in fanouts) >= 6


def _assert_runner(received: list[ReceivedSpan], trace_id: int, launch: ReadableSpan) -> None:
    by_name = {span.name: span for span in received}
    runner, engine = by_name["runner"], by_name["engine.run"]
    assert runner.service == "cmbtask-runner"
    # the runner's own span hangs under the gateway's launch span: the TRACEPARENT it was given
    assert runner.trace_id == _hex(trace_id, 32)
    assert runner.parent_span_id == _hex(launch.context.span_id, 16)
    assert runner.attributes["cmbtask.exit_code"] == 0
    assert engine.trace_id == runner.trace_id and engine.parent_span_id == runner.span_id
    for step in ("step 1", "step 2"):
        assert by_name[step].parent_span_id == engine.span_id, step
