"""The executor's handling of one kubectl decision, with the API server and the
gateway's records faked: claim first (one replica wins), then decide, then an
Event; a claim that loses changes nothing and reports nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cmbtask_gateway.executors.k8s_decisions import KubectlDecision, Outcome
from cmbtask_gateway.executors.kubernetes import KubernetesExecutor
from cmbtask_gateway.settings import Settings
from cmbtask_protocol import Decision, DecisionEventReason
from kubernetes_asyncio.client.exceptions import ApiException


class _Api:
    """Both API groups the executor uses; the resourceVersion is the only truth."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.patches: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    async def patch_namespaced_custom_object(self, *args: Any, **_: Any) -> dict[str, Any]:
        body: dict[str, Any] = args[-1]
        if body["metadata"].get("resourceVersion") != self.version:
            raise ApiException(status=409, reason="Conflict")
        self.patches.append(body)
        self.version = str(int(self.version) + 1)
        return body

    async def create_namespaced_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.events.append(body)
        return body


class _Records:
    def __init__(self) -> None:
        self.decided: list[tuple[str, KubectlDecision]] = []

    async def decide(self, task_id: str, wanted: KubectlDecision) -> Outcome:
        self.decided.append((task_id, wanted))
        return Outcome(DecisionEventReason.APPLIED, "applied")


class _Faked(KubernetesExecutor):
    def __init__(self, tmp_path: Path, api: _Api, records: _Records, *, trust: bool = True) -> None:
        settings = Settings(data_dir=tmp_path, executor="none", kubernetes_trust_decided_by=trust)
        super().__init__(settings, records)  # type: ignore[arg-type]
        self._fake = api

    @property
    def _custom(self) -> Any:
        return self._fake

    @property
    def _core(self) -> Any:
        return self._fake


def _annotated(version: str, **annotations: str) -> dict[str, Any]:
    meta = {
        "name": "t1", "namespace": "ns", "uid": "u1", "resourceVersion": version,
        "annotations": annotations, "labels": {"cmbtask.io/origin": "kubectl"},
    }  # fmt: skip
    return {"metadata": meta, "spec": {"taskId": "task-1"}, "status": {}}


def test_two_replicas_seeing_one_decision_apply_it_once(tmp_path: Path) -> None:
    api, records = _Api("7"), _Records()
    obj = _annotated("7", **{"cmbtask.io/decision": "approve", "cmbtask.io/decided-by": "alice"})
    first, second = _Faked(tmp_path, api, records), _Faked(tmp_path, api, records)
    asyncio.run(first._on_event("MODIFIED", obj))
    asyncio.run(second._on_event("MODIFIED", obj))  # same version: its claim loses
    [(task_id, wanted)] = records.decided
    assert (task_id, wanted.decision, wanted.resolved_by) == ("task-1", Decision.APPROVE, "kubernetes:alice")
    [claim] = api.patches
    assert claim["metadata"]["annotations"]["cmbtask.io/decision"] is None
    [event] = api.events
    assert (event["reason"], event["involvedObject"]["name"]) == ("DecisionApplied", "t1")


def test_a_malformed_decision_is_consumed_and_refused_in_an_event(tmp_path: Path) -> None:
    api, records = _Api("3"), _Records()
    asyncio.run(
        _Faked(tmp_path, api, records)._on_event("MODIFIED", _annotated("3", **{"cmbtask.io/decision": "ok"}))
    )
    assert records.decided == [] and len(api.patches) == 1
    [event] = api.events
    assert (
        event["type"] == "Warning"
        and event["reason"] == "DecisionRefused"
        and "not one of" in event["message"]
    )


def test_without_the_policies_the_decider_is_unknown_and_text_alone_waits(tmp_path: Path) -> None:
    api, records = _Api("5"), _Records()
    executor = _Faked(tmp_path, api, records, trust=False)
    asyncio.run(executor._on_event("MODIFIED", _annotated("5", **{"cmbtask.io/decision-text": "soon"})))
    assert api.patches == [] and records.decided == []  # no decision yet: nothing consumed
    decided = _annotated("5", **{"cmbtask.io/decision": "reject", "cmbtask.io/decided-by": "mallory"})
    asyncio.run(executor._on_event("MODIFIED", decided))
    [(_, wanted)] = records.decided
    assert wanted.resolved_by == "kubernetes:unknown"
