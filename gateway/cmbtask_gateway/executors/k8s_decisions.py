"""Decisions made with ``kubectl annotate``: reading them, choosing the approval
they are for, and the Kubernetes Event that reports each one.

The annotations are described in ``cmbtask_protocol.crd_approvals``. Who the
decider was comes from ``cmbtask.io/decided-by``, which only the API server's
admission policies write; on a cluster without them (the chart's
``kubectlDecisions.admissionPolicies=false``) the gateway does not trust the
annotation and records ``kubernetes:unknown``. Everything here is pure; the
kubernetes executor does the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from cmbtask_protocol import (
    CRD_GROUP,
    CRD_KIND,
    CRD_VERSION,
    DECIDED_BY_ANNOTATION,
    DECISION_ANNOTATION,
    DECISION_ANNOTATIONS,
    DECISION_APPROVAL_ANNOTATION,
    DECISION_TEXT_ANNOTATION,
    KUBERNETES_USER_PREFIX,
    SHORT_ID_CHARS,
    UNKNOWN_KUBERNETES_USER,
    ApprovalStatus,
    Decision,
    DecisionEventReason,
    timestamp,
)

__all__ = [
    "GATEWAY_COMPONENT",
    "ApprovalRow",
    "DecisionError",
    "KubectlDecision",
    "Outcome",
    "choose_approval",
    "consume_patch",
    "event_body",
    "read_decision",
]

GATEWAY_COMPONENT = "cmbtask-gateway"
_MAX_TEXT = 100_000
_MAX_DECIDER = 200
R = TypeVar("R", bound="ApprovalRow")


class DecisionError(ValueError):
    """The annotations do not make a decision; the message says why."""


@dataclass(frozen=True)
class KubectlDecision:
    decision: Decision
    text: str | None
    #: the approval meant (an id or its first characters); None: the pending one
    approval: str | None
    resolved_by: str


@dataclass(frozen=True)
class Outcome:
    reason: str
    message: str

    @property
    def event_type(self) -> str:
        return "Normal" if self.reason == DecisionEventReason.APPLIED else "Warning"


class ApprovalRow(Protocol):
    """What choosing an approval needs of the gateway's row."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


def read_decision(annotations: Mapping[str, str], *, trust_decided_by: bool) -> KubectlDecision | None:
    """The decision the annotations carry; None when they carry none yet
    (``decision-text`` may be set before ``decision``)."""
    raw = annotations.get(DECISION_ANNOTATION)
    if raw is None:
        return None
    try:
        decision = Decision(raw.strip().lower())
    except ValueError:
        offered = ", ".join(d.value for d in Decision)
        raise DecisionError(f"{DECISION_ANNOTATION}={raw!r} is not one of {offered}") from None
    text = annotations.get(DECISION_TEXT_ANNOTATION) or None
    if text is not None and len(text) > _MAX_TEXT:
        raise DecisionError(f"{DECISION_TEXT_ANNOTATION} is longer than {_MAX_TEXT} characters")
    approval = (annotations.get(DECISION_APPROVAL_ANNOTATION) or "").strip() or None
    if approval is not None and len(approval) < SHORT_ID_CHARS:
        raise DecisionError(f"{DECISION_APPROVAL_ANNOTATION} needs at least {SHORT_ID_CHARS} characters")
    return KubectlDecision(decision, text, approval, _decider(annotations, trust_decided_by))


def _decider(annotations: Mapping[str, str], trust: bool) -> str:
    user = (annotations.get(DECIDED_BY_ANNOTATION) or "").strip()
    # Only the admission policies make the annotation trustworthy; without them
    # anyone who may annotate could name anyone.
    named = f"{KUBERNETES_USER_PREFIX}{user}" if trust and user else UNKNOWN_KUBERNETES_USER
    return named[:_MAX_DECIDER]  # the approvals table's resolved_by holds this much


def choose_approval(rows: Sequence[R], wanted: str | None) -> R | None:
    """The approval a decision is for: the one named, else the pending one,
    else the latest (so that the report can say how it ended)."""
    if wanted is not None:
        return next((r for r in rows if r.id.startswith(wanted)), None)
    newest = sorted(rows, key=lambda r: r.created_at, reverse=True)
    pending = [r for r in newest if r.status == ApprovalStatus.PENDING.value]
    chosen = pending or newest
    return chosen[0] if chosen else None


def consume_patch(resource_version: str) -> dict[str, Any]:
    """Removes every decision annotation, only if nobody wrote the object since
    ``resource_version``: of several gateway replicas, one wins the claim."""
    annotations: dict[str, Any] = dict.fromkeys(DECISION_ANNOTATIONS)
    return {"metadata": {"resourceVersion": resource_version, "annotations": annotations}}


def event_body(obj: Mapping[str, Any], outcome: Outcome, now: datetime, instance: str) -> dict[str, Any]:
    """A core/v1 Event on the CmbTask: what ``kubectl describe ct`` and
    ``kubectl events`` show."""
    meta = obj["metadata"]
    when = timestamp(now)
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
            "kind": CRD_KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "reason": outcome.reason,
        "message": outcome.message,
        "type": outcome.event_type,
        "source": {"component": GATEWAY_COMPONENT},
        "reportingComponent": GATEWAY_COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }
