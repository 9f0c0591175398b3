"""Approvals decided with kubectl, on the real cluster with the real gateway,
operator and runner pods: the approval shows in ``kubectl get ct`` and in the
object's status, ``kubectl annotate`` decides it through the gateway's one
approval path, the API server names the decider (the chart's admission
policies stamp ``cmbtask.io/decided-by``), and a decision for an approval that
is no longer pending is reported in an Event and changes nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.e2e.cluster import Kubectl, cmbtask, wait_for
from tests.e2e.conftest import GATEWAY_NAMESPACE
from tests.support.gateway import GatewayProcess

pytestmark = [pytest.mark.k8s, pytest.mark.usefixtures("operator")]
NS = GATEWAY_NAMESPACE
DEMO = {"steps": 2, "step_delay_s": 0.1, "lines_per_step": 1, "approve_plan": True}
DECISION_KEYS = {"cmbtask.io/decision", "cmbtask.io/decision-text", "cmbtask.io/decided-by"}


def status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return dict((kubectl.get("cmbtask", name, NS) or {}).get("status") or {})


def pending_task(kubectl: Kubectl) -> tuple[str, dict[str, Any]]:
    """A demo CmbTask applied with kubectl, waiting for its plan's approval."""
    name = f"decide-{uuid.uuid4().hex[:6]}"
    kubectl.apply(cmbtask(name, engine="demo", mode="planning-control", params=DEMO), namespace=NS)
    return name, wait_for(
        lambda: awaiting(kubectl, name), 120, f"{name}'s approval to show pending", interval_s=0.3
    )


def awaiting(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    """The pending approval, once the whole status says so: two writers fill it
    (the gateway's sync and the operator's pod watch), each in its own patch."""
    now = status(kubectl, name)
    approval = now.get("approval") or {}
    conditions = {c["type"]: c["status"] for c in now.get("conditions") or []}
    shown = (approval.get("state"), now.get("phase"), conditions.get("AwaitingApproval"))
    return approval if shown == ("pending", "waiting_approval", "True") else None


def whoami(kubectl: Kubectl) -> str:
    review = json.loads(kubectl.run("auth", "whoami", "-o", "json").stdout)
    return str(review["status"]["userInfo"]["username"])


def decision_events(kubectl: Kubectl, name: str, reason: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={name},reason={reason}"
    found = kubectl.run("get", "events", "-n", NS, "--field-selector", selector, "-o", "json").stdout
    return list(json.loads(found)["items"])


def gateway_approval(gateway: GatewayProcess, approval_id: str) -> dict[str, Any]:
    with gateway.client() as http:
        items = http.get("/api/approvals").json()["items"]
    return dict(next(a for a in items if a["id"] == approval_id))


def final_phase(kubectl: Kubectl, name: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        now = status(kubectl, name)
        return now if now.get("phase") in {"succeeded", "failed", "cancelled", "timed_out"} else None

    return wait_for(ended, 120, f"{name} to end", interval_s=0.3)


def approval_in(kubectl: Kubectl, name: str, state: str) -> dict[str, Any] | None:
    approval = status(kubectl, name).get("approval") or {}
    return approval if approval.get("state") == state else None


def consumed(kubectl: Kubectl, name: str) -> bool:
    annotations = (kubectl.get("cmbtask", name, NS) or {})["metadata"].get("annotations") or {}
    return not DECISION_KEYS & set(annotations)


def test_kubectl_approve_resolves_as_the_kubernetes_user_and_a_second_decision_is_ignored(
    gateway: GatewayProcess, kubectl: Kubectl
) -> None:
    name, approval = pending_task(kubectl)
    assert approval["summary"] == f"pending plan/{approval['id'][:8]}"
    assert approval["options"] and "approve" in approval["options"] and approval["prompt"]
    table = kubectl.run("get", "ct", name, "-n", NS).stdout
    assert "APPROVAL" in table.splitlines()[0] and approval["summary"] in table, table
    conditions = {c["type"]: c for c in status(kubectl, name)["conditions"]}
    assert conditions["AwaitingApproval"]["message"] == approval["prompt"]

    user = whoami(kubectl)
    kubectl.run("annotate", "ct", name, "-n", NS, "cmbtask.io/decision=approve")
    ended = final_phase(kubectl, name)
    assert ended["phase"] == "succeeded", ended
    decided = gateway_approval(gateway, approval["id"])
    assert (decided["status"], decided["resolved_by"]) == ("approved", f"kubernetes:{user}")
    [applied] = wait_for(lambda: decision_events(kubectl, name, "DecisionApplied"), 30, "the applied Event")
    assert applied["type"] == "Normal" and f"kubernetes:{user}" in applied["message"]
    assert consumed(kubectl, name)
    shown = wait_for(lambda: approval_in(kubectl, name, "approved"), 30, "the approved status")
    assert shown["resolvedBy"] == f"kubernetes:{user}"
    assert shown["summary"] in kubectl.run("get", "ct", name, "-n", NS).stdout

    # the same approval decided again (the other way): reported, not applied
    kubectl.run("annotate", "ct", name, "-n", NS, "cmbtask.io/decision=reject")
    [ignored] = wait_for(lambda: decision_events(kubectl, name, "DecisionIgnored"), 30, "the ignored Event")
    assert ignored["type"] == "Warning"
    assert f"no longer pending (it is approved by kubernetes:{user})" in ignored["message"], ignored
    assert gateway_approval(gateway, approval["id"]) == decided
    assert status(kubectl, name)["phase"] == "succeeded"
    wait_for(lambda: consumed(kubectl, name), 30, "the stale decision to be consumed")

    # decided-by is the API server's to write, never a user's
    forged = kubectl.run("annotate", "ct", name, "-n", NS, "cmbtask.io/decided-by=someone-else", check=False)
    assert forged.returncode != 0 and "decided-by" in forged.stderr, forged.stderr


def test_kubectl_reject_by_another_user_fails_the_task_as_a_reject_does(
    gateway: GatewayProcess, kubectl: Kubectl
) -> None:
    name, approval = pending_task(kubectl)
    # the stamp follows the request's user, here an impersonated one; a
    # hand-written decided-by in the same request is overwritten, not believed
    kubectl.run("annotate", "ct", name, "-n", NS, "--as", "carol", "--as-group", "system:masters",
                "cmbtask.io/decision=reject", "cmbtask.io/decided-by=mallory")  # fmt: skip
    ended = final_phase(kubectl, name)
    assert ended["phase"] == "failed", ended
    decided = gateway_approval(gateway, approval["id"])
    assert (decided["status"], decided["resolved_by"]) == ("rejected", "kubernetes:carol")
    with gateway.client() as http:
        task = http.get(f"/api/tasks/{decided['task_id']}").json()
    assert task["phase"] == "failed" and "plan rejected by kubernetes:carol" in (task["reason"] or ""), task
    wait_for(lambda: decision_events(kubectl, name, "DecisionApplied"), 30, "the applied Event")
    assert consumed(kubectl, name)
