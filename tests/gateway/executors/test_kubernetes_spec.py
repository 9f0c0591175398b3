"""The CmbTask the kubernetes executor makes for a task, without a cluster:
its spec must pass the operator's own checks, and hold no secrets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from cmbtask_gateway.executors.base import LaunchRequest
from cmbtask_gateway.executors.kubernetes import KubernetesExecutor
from cmbtask_gateway.settings import Settings
from cmbtask_operator.handlers import refusal
from cmbtask_operator.pods import PodInput, build_pod
from cmbtask_operator.settings import OperatorSettings
from cmbtask_protocol import ANNOTATION_TRACEPARENT, ENV_TRACEPARENT, CmbTaskSpec

KEY = "sk-user-key-0123456789abcdef"
TOKEN = "runner-token-0123456789"


class _Custom:
    """Records what would have been sent to the API server."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    async def create_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        self.created.append(args[-1])
        return args[-1]


class _Recording(KubernetesExecutor):
    def __init__(self, settings: Settings, custom: _Custom) -> None:
        super().__init__(settings, records=None)  # type: ignore[arg-type]  # unused by _create
        self._fake = custom

    @property
    def _custom(self) -> Any:
        return self._fake


def _built(tmp_path: Path, **request: Any) -> dict[str, Any]:
    custom = _Custom()
    executor = _Recording(Settings(data_dir=tmp_path, executor="none"), custom)
    fields: dict[str, Any] = {
        "task_id": "t1", "session_id": "s1", "owner": "alice", "engine": "script", "mode": "one-shot",
        "gateway_url": "http://gateway.cmbtask:8080", "token": TOKEN, "provider_env": {"OPENAI_API_KEY": KEY},
    }  # fmt: skip
    asyncio.run(executor._create(LaunchRequest(**{**fields, **request})))
    [body] = custom.created
    return body


def test_the_cmbtask_spec_carries_the_tasks_params_and_no_keys(tmp_path: Path) -> None:
    params = {"code": "print('hello')", "env": {"GREETING": "hi"}}
    body = _built(tmp_path, params=params)
    spec = CmbTaskSpec.model_validate(body["spec"])
    assert spec.params == params
    assert (spec.engine, spec.task_id, spec.owner) == ("script", "t1", "alice")
    # the operator's check of a script task's params passes on this spec
    assert refusal(spec, OperatorSettings()) is None
    text = json.dumps(body)
    assert KEY not in text and TOKEN not in text


def test_a_spec_without_params_is_what_the_operator_refuses(tmp_path: Path) -> None:
    spec = CmbTaskSpec.model_validate(_built(tmp_path)["spec"])
    assert spec.params == {}
    problem = refusal(spec, OperatorSettings())
    assert problem is not None and problem[0] == "InvalidParams", problem


def test_params_pass_through_unchanged(tmp_path: Path) -> None:
    params = {"steps": 2, "step_delay_s": 0.1, "nested": {"a": [1, 2]}}
    assert _built(tmp_path, engine="demo", params=params)["spec"]["params"] == params


def test_a_retry_runs_in_a_cmbtask_of_its_own(tmp_path: Path) -> None:
    first, second = _built(tmp_path), _built(tmp_path, attempt=2)
    assert first["metadata"]["name"] == "task-t1" and second["metadata"]["name"] == "task-t1-a2"
    assert second["metadata"]["labels"] == first["metadata"]["labels"], "both are found as the task's"
    spec = CmbTaskSpec.model_validate(second["spec"])
    assert (spec.task_id, spec.attempt) == ("t1", 2)


def test_the_launch_context_rides_on_the_cmbtask_to_the_runner_pod(tmp_path: Path) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    body = _built(tmp_path, engine="demo", trace_parent=traceparent)
    assert body["metadata"]["annotations"] == {ANNOTATION_TRACEPARENT: traceparent}
    assert traceparent not in json.dumps(body["spec"]), "metadata, not the task's desired state"
    assert "annotations" not in _built(tmp_path, engine="demo")["metadata"]
    # what the operator's launch handler reads from the object, into the pod
    spec = CmbTaskSpec.model_validate(body["spec"])
    source = PodInput(
        name=body["metadata"]["name"], namespace="ns", uid="u1", spec=spec,
        settings=OperatorSettings(standalone=True, priority=1),
        traceparent=body["metadata"]["annotations"][ANNOTATION_TRACEPARENT],
    )  # fmt: skip
    env = {item["name"]: item.get("value") for item in build_pod(source)["spec"]["containers"][0]["env"]}
    assert env[ENV_TRACEPARENT] == traceparent
