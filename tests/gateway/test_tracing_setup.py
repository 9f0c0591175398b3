"""When tracing is on, and what it costs when off: nothing of the SDK loaded,
no provider, no middleware; and where the trace context goes at launch.

The process-wide checks run in fresh interpreters: this test process has the
SDK imported already, and OpenTelemetry's global provider can be set once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cmbtask_gateway.executors.base import LaunchRequest
from cmbtask_gateway.executors.local import LocalExecutor
from cmbtask_protocol import ENV_TRACEPARENT, tracing_configured

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

_PROBE = """
import json, sys
from cmbtask_gateway import tracing
from cmbtask_gateway.app import create_app
from cmbtask_gateway.http_tracing import TraceRequests
from cmbtask_gateway.settings import Settings
from opentelemetry import trace
app = create_app(Settings(data_dir=sys.argv[1], executor="none"))
import cmbtask_runner.tracing as runner_tracing
print(json.dumps({
    "gateway_on": tracing.enabled(),
    "runner_on": runner_tracing.start(),
    "provider": type(trace.get_tracer_provider()).__module__,
    "sdk_loaded": "opentelemetry.sdk.trace" in sys.modules,
    "exporter_loaded": "opentelemetry.exporter.otlp.proto.http" in sys.modules,
    "middleware": [m.cls.__name__ for m in app.user_middleware],
}))
"""


def _probe(tmp_path: Path, **otel: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != ENV_TRACEPARENT}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path)],
        env={**env, **otel}, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_with_tracing_off_no_provider_exporter_or_middleware_is_installed(tmp_path: Path) -> None:
    found = _probe(tmp_path)
    assert found["gateway_on"] is False and found["runner_on"] is False
    assert found["provider"] == "opentelemetry.trace", "the API's proxy, not the SDK's provider"
    assert found["sdk_loaded"] is False and found["exporter_loaded"] is False
    assert "TraceRequests" not in found["middleware"]  # type: ignore[operator]


def test_the_standard_environment_turns_it_on(tmp_path: Path) -> None:
    # Nothing listens there: spans are queued and dropped, the app does not care.
    found = _probe(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SERVICE_NAME="gw")
    assert found["gateway_on"] is True and found["runner_on"] is True
    assert found["provider"] == "opentelemetry.sdk.trace" and found["exporter_loaded"] is True
    assert "TraceRequests" in found["middleware"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ],
)
def test_when_the_environment_asks_for_traces(env: dict[str, str], on: bool) -> None:
    assert tracing_configured(env) is on


def _local_env(tmp_path: Path, trace_parent: str | None) -> dict[str, str]:
    executor = LocalExecutor(tmp_path, ["python", "-m", "cmbtask_runner"], prefork=False)
    request = LaunchRequest(
        task_id="t1", session_id="s1", owner="alice", engine="demo", mode="one-shot",
        gateway_url="http://127.0.0.1:1", token="tok", trace_parent=trace_parent,
    )  # fmt: skip
    return executor._env(request, tmp_path)


def test_the_local_executor_hands_the_launch_context_to_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _local_env(tmp_path, TRACEPARENT)[ENV_TRACEPARENT] == TRACEPARENT
    # a context the gateway process itself was started with is not the task's
    monkeypatch.setenv(ENV_TRACEPARENT, "00-11111111111111111111111111111111-2222222222222222-01")
    assert ENV_TRACEPARENT not in _local_env(tmp_path, None)
    assert _local_env(tmp_path, TRACEPARENT)[ENV_TRACEPARENT] == TRACEPARENT
