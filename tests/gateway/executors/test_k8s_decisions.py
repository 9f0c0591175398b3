"""kubectl decisions without a cluster: reading the annotations, choosing the
approval a decision is for, the consuming patch and the Event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cmbtask_gateway.executors.k8s_decisions import (
    DecisionError,
    Outcome,
    choose_approval,
    consume_patch,
    event_body,
    read_decision,
)
from cmbtask_protocol import DECISION_ANNOTATIONS, Decision, DecisionEventReason

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@dataclass
class Row:
    id: str
    status: str
    created_at: datetime


def test_no_decision_annotation_is_no_decision_yet() -> None:
    assert read_decision({"cmbtask.io/decision-text": "later"}, trust_decided_by=True) is None


def test_a_decision_names_the_kubernetes_user_the_api_server_stamped() -> None:
    wanted = read_decision(
        {"cmbtask.io/decision": " Approve ", "cmbtask.io/decided-by": "alice@example.com"},
        trust_decided_by=True,
    )
    assert wanted is not None
    assert (wanted.decision, wanted.text, wanted.approval) == (Decision.APPROVE, None, None)
    assert wanted.resolved_by == "kubernetes:alice@example.com"
    long = read_decision(
        {"cmbtask.io/decision": "approve", "cmbtask.io/decided-by": "x" * 300}, trust_decided_by=True
    )
    assert long is not None and len(long.resolved_by) == 200  # what the approvals table holds


@pytest.mark.parametrize("annotations", [{}, {"cmbtask.io/decided-by": "mallory"}])
def test_an_unvouched_decider_is_unknown(annotations: dict[str, str]) -> None:
    # without the admission policies the annotation could name anyone
    untrusted = read_decision({"cmbtask.io/decision": "reject", **annotations}, trust_decided_by=False)
    assert untrusted is not None and untrusted.resolved_by == "kubernetes:unknown"
    # with them, a missing stamp is unknown too, never the empty name
    missing = read_decision({"cmbtask.io/decision": "reject"}, trust_decided_by=True)
    assert missing is not None and missing.resolved_by == "kubernetes:unknown"


def test_text_and_target_are_read() -> None:
    wanted = read_decision(
        {"cmbtask.io/decision": "answer", "cmbtask.io/decision-text": "42",
         "cmbtask.io/decision-approval": "1a2b3c4d"},
        trust_decided_by=True,
    )  # fmt: skip
    assert wanted is not None and (wanted.decision, wanted.text, wanted.approval) == (
        Decision.ANSWER, "42", "1a2b3c4d",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("annotations", "says"),
    [
        ({"cmbtask.io/decision": "yes"}, "is not one of approve, reject, modify, answer"),
        ({"cmbtask.io/decision": "approve", "cmbtask.io/decision-approval": "1a2b"}, "at least 8"),
        ({"cmbtask.io/decision": "modify", "cmbtask.io/decision-text": "x" * 100_001}, "longer"),
    ],
)
def test_malformed_decisions_say_why(annotations: dict[str, str], says: str) -> None:
    with pytest.raises(DecisionError, match=says):
        read_decision(annotations, trust_decided_by=True)


def test_the_pending_approval_is_chosen_else_the_latest() -> None:
    old = Row("aaaaaaaa-1", "approved", T0)
    pending = Row("bbbbbbbb-2", "pending", T0 + timedelta(seconds=1))
    newest = Row("cccccccc-3", "expired", T0 + timedelta(seconds=2))
    assert choose_approval([old, pending, newest], None) is pending
    assert choose_approval([old, newest], None) is newest
    assert choose_approval([], None) is None
    assert choose_approval([old, pending, newest], "aaaaaaaa") is old
    assert choose_approval([old, pending], "dddddddd") is None


def test_consuming_removes_every_decision_annotation_only_at_the_version_read() -> None:
    patch = consume_patch("4711")
    assert patch["metadata"]["resourceVersion"] == "4711"
    assert patch["metadata"]["annotations"] == dict.fromkeys(DECISION_ANNOTATIONS)
    assert "cmbtask.io/decided-by" in patch["metadata"]["annotations"]


def test_the_event_is_on_the_object_and_warns_unless_applied() -> None:
    obj = {"metadata": {"name": "t1", "namespace": "ns", "uid": "u-1"}}
    ignored = event_body(obj, Outcome(DecisionEventReason.IGNORED, "no"), T0, "gw-0")
    assert ignored["involvedObject"] == {
        "apiVersion": "cmbtask.io/v1alpha1", "kind": "CmbTask", "name": "t1", "namespace": "ns", "uid": "u-1",
    }  # fmt: skip
    assert (ignored["type"], ignored["reason"], ignored["message"]) == ("Warning", "DecisionIgnored", "no")
    assert ignored["metadata"] == {"generateName": "t1.", "namespace": "ns"}
    assert ignored["firstTimestamp"] == "2026-12-02T12:00:00Z"
    applied = event_body(obj, Outcome(DecisionEventReason.APPLIED, "ok"), T0, "gw-0")
    assert applied["type"] == "Normal"
    assert event_body(obj, Outcome(DecisionEventReason.REFUSED, "x"), T0, "gw-0")["type"] == "Warning"
