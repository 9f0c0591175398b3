"""The runner's own spans, exported over OTLP/HTTP to a real receiver: under
the context the gateway passed in TRACEPARENT, a step that failed among them;
and a collector that is down costs a traced runner nothing but a bounded wait."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cmbtask_protocol import ENV_TRACEPARENT

from tests.runner.runner_fakegw import FakeGateway, finish, start_runner
from tests.support.gateway import free_port
from tests.support.otlp_receiver import TraceReceiver

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
LAUNCH_SPAN = "b7ad6b7169203331"


async def test_the_runners_spans_hang_under_the_launch_it_was_given(gw: FakeGateway, tmp_path: Path) -> None:
    record = gw.add_task("demo", {"steps": 3, "step_delay_s": 0, "lines_per_step": 1, "fail_at_step": 2})
    with TraceReceiver() as receiver:
        traced = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            ENV_TRACEPARENT: f"00-{TRACE_ID}-{LAUNCH_SPAN}-01",
        }
        proc = await start_runner(gw, record, tmp_path, **traced)
        assert await finish(proc) == 1  # the injected failure
        spans = {span.name: span for span in receiver.spans}
    runner, engine = spans["runner"], spans["engine.run"]
    assert (runner.trace_id, runner.parent_span_id) == (TRACE_ID, LAUNCH_SPAN)
    assert runner.attributes["cmbtask.task_id"] == record.spec.id
    assert runner.attributes["cmbtask.final_event"] == "task.failed"
    assert engine.parent_span_id == runner.span_id and engine.attributes["cmbtask.engine"] == "demo"
    assert spans["step 1"].parent_span_id == spans["step 2"].parent_span_id == engine.span_id
    assert "step 3" not in spans, "the engine stopped at the failed step"
    assert {span.trace_id for span in receiver.spans} == {TRACE_ID}


async def test_a_collector_that_is_down_does_not_change_how_the_task_ends(
    gw: FakeGateway, tmp_path: Path
) -> None:
    record = gw.add_task("demo", {"steps": 1, "step_delay_s": 0, "lines_per_step": 0})
    started = time.monotonic()
    proc = await start_runner(
        gw, record, tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}"
    )
    assert await finish(proc, timeout_s=40) == 0
    assert time.monotonic() - started < 30, "the flush at exit is bounded"
    assert json.loads((tmp_path / "exit.json").read_text())["exit_code"] == 0
    assert record.final() is not None and record.final()["event_type"] == "task.succeeded"  # type: ignore[index]
