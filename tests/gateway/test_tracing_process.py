"""Traces as deployed: ``cmbtask up`` configured by the standard OTEL_*
environment alone exports its own spans and its runners' over OTLP/HTTP to a
real receiver, in one trace, and its log lines name that trace."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runner.gateway_tasks import LOCAL, new_session, submit, wait_phase
from tests.support.gateway import GatewayProcess
from tests.support.otlp_receiver import TraceReceiver


@pytest.fixture
def receiver() -> Iterator[TraceReceiver]:
    with TraceReceiver() as running:
        yield running


async def test_a_traced_gateway_process_exports_one_trace_with_its_runner(
    database_url: str, tmp_path: Path, receiver: TraceReceiver
) -> None:
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    gateway = GatewayProcess(tmp_path / "data", database_url, **LOCAL, **otel).start()
    try:
        with gateway.client() as http:
            session_id = new_session(http)
            task_id = submit(http, session_id, engine="demo", params={"steps": 1, "step_delay_s": 0})["id"]
        assert (await wait_phase(gateway, task_id))["phase"] == "succeeded"
        [step] = receiver.wait_for("step 1")
        [submitted] = receiver.wait_for("task.submit")
        receiver.wait_for("ingest.commit")
    finally:
        gateway.stop()
    assert submitted.service == "cmbtask-gateway" and step.service == "cmbtask-runner"
    assert submitted.attributes["cmbtask.task_id"] == task_id
    assert step.trace_id == submitted.trace_id
    in_trace = {span.name for span in receiver.spans if span.trace_id == submitted.trace_id}
    assert {"task.launch", "runner", "engine.run", "ingest.commit", "hub.fanout"} <= in_trace, in_trace
    lines = [json.loads(line) for line in gateway.log_path.read_text().splitlines() if line.startswith("{")]
    launched = [line for line in lines if line.get("event") == "dispatch.launched"]
    assert launched and launched[0]["trace_id"] == submitted.trace_id
    runner_log = (tmp_path / "data" / "tasks" / task_id / "runner.log").read_text()
    assert runner_log.count(submitted.trace_id) >= 2, "the runner's lines name the trace too"
    # one request span per request: FastAPI's own telemetry stays off
    requests = [span for span in receiver.spans if span.name == "POST /api/sessions/{session_id}/tasks"]
    assert len(requests) == 1 and requests[0].span_id == submitted.parent_span_id
    assert not [span.name for span in receiver.spans if span.name.startswith("fastapi.")]
    assert "GET /readyz" not in {span.name for span in receiver.spans}, "probes are not traced"
