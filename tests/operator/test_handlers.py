"""The kopf handlers called as kopf calls them, with an in-memory API in
place of the cluster: a pod made once and recorded, a refusal recorded
without a pod, a cancel written before the pod is deleted."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from cmbtask_operator.handlers import OperatorMemo, cancel, launch
from cmbtask_operator.settings import OperatorSettings
from cmbtask_protocol import ANNOTATION_TRACEPARENT, ENV_TRACEPARENT


class _Api:
    """The calls of ``Kube`` the handlers make, against dicts."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {"t1": {"phase": "running"}}
        self.calls: list[str] = []

    async def secret_exists(self, namespace: str, name: str) -> bool:
        return True

    async def pod_exists(self, namespace: str, name: str) -> bool:
        return name in self.pods

    async def create_pod(self, namespace: str, pod: dict[str, Any]) -> bool:
        name = pod["metadata"]["name"]
        made = name not in self.pods
        self.pods[name] = pod
        return made

    async def get_cmbtask(self, namespace: str, name: str) -> dict[str, Any] | None:
        status = self.statuses.get(name)
        return None if status is None else {"status": status, "metadata": {"resourceVersion": "1"}}

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any], **_: Any) -> bool:
        self.calls.append("patch_status")
        self.statuses[name] = {**self.statuses.get(name, {}), **patch}
        return True

    async def delete_pod(self, namespace: str, name: str, grace_s: int | None = None) -> bool:
        self.calls.append("delete_pod")
        return self.pods.pop(name, None) is not None


@pytest.fixture(autouse=True)
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Kubernetes Events the handlers post (kopf's poster needs a running operator)."""
    events: list[tuple[str, str]] = []
    for kind in ("info", "warn"):
        monkeypatch.setattr(
            kopf, kind, lambda _body, *, reason, message="", kind=kind: events.append((kind, reason))
        )
    return events


def _memo(api: _Api) -> OperatorMemo:
    memo = OperatorMemo(config=OperatorSettings(engines=["demo"], standalone=True, priority=1))
    memo.kube = api  # type: ignore[assignment]
    return memo


def _body(name: str) -> kopf.Body:
    return kopf.Body({"metadata": {"name": name, "namespace": "ns", "uid": "u-1"}})  # type: ignore[typeddict-item]


async def _launch(api: _Api, spec: dict[str, Any], status: dict[str, Any]) -> kopf.Patch:
    patch = kopf.Patch()
    await launch(
        name="t1", namespace="ns", uid="u-1", spec=spec, status=status, body=_body("t1"),
        meta={"creationTimestamp": None}, patch=patch, memo=_memo(api),
    )  # fmt: skip
    return patch


async def test_launch_makes_the_pod_once_and_records_it() -> None:
    api = _Api()
    patch = await _launch(api, {"engine": "demo", "taskId": "task-1"}, {})
    assert list(api.pods) and patch["status"]["podName"] in api.pods
    assert patch["status"]["taskId"] == "task-1" and patch["status"]["phase"] == "starting"
    # on resume, a pod that exists is kept and a later phase not set back
    resumed = {"podName": patch["status"]["podName"], "phase": "running"}
    again = await _launch(api, {"engine": "demo", "taskId": "task-1"}, resumed)
    assert len(api.pods) == 1 and "phase" not in again["status"]


async def test_launch_refuses_an_engine_the_cluster_lacks_without_a_pod(
    posted: list[tuple[str, str]],
) -> None:
    api = _Api()
    patch = await _launch(api, {"engine": "quantum"}, {})
    assert api.pods == {} and posted == [("warn", "UnknownEngine")]
    assert patch["status"]["phase"] == "failed"
    assert "UnknownEngine" in str(patch["status"]["conditions"])


async def test_a_finished_task_is_left_alone() -> None:
    api = _Api()
    patch = await _launch(api, {"engine": "demo"}, {"phase": "succeeded"})
    assert api.pods == {} and not patch


async def test_cancel_writes_the_final_status_before_deleting_the_pod(posted: list[tuple[str, str]]) -> None:
    api = _Api()
    api.pods["t1-runner"] = {}
    await cancel(name="t1", namespace="ns", body=_body("t1"), memo=_memo(api))
    assert api.statuses["t1"]["phase"] == "cancelled"
    assert api.calls == ["patch_status", "delete_pod"]
    assert posted == [("info", "Cancelled")]


async def test_handlers_before_the_api_is_connected_retry() -> None:
    memo = OperatorMemo(config=OperatorSettings(standalone=True, priority=1))
    with pytest.raises(kopf.TemporaryError):
        await cancel(name="t1", namespace="ns", body=_body("t1"), memo=memo)


async def test_launch_hands_the_cmbtasks_trace_context_to_the_pod() -> None:
    api = _Api()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    meta = {"creationTimestamp": None, "annotations": {ANNOTATION_TRACEPARENT: traceparent}}
    await launch(
        name="t1", namespace="ns", uid="u-1", spec={"engine": "demo", "taskId": "task-1"}, status={},
        body=_body("t1"), meta=meta, patch=kopf.Patch(), memo=_memo(api),
    )  # fmt: skip
    [pod] = api.pods.values()
    env = {item["name"]: item.get("value") for item in pod["spec"]["containers"][0]["env"]}
    assert env[ENV_TRACEPARENT] == traceparent
