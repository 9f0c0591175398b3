"""Approvals on a ``CmbTask``: how ``kubectl`` shows and decides them.

The gateway owns the approvals, so it alone writes ``status.approval`` (the
task's latest approval, pending or how it ended) and it alone reads the
decision annotations a user sets with ``kubectl annotate``:

- ``cmbtask.io/decision``: ``approve``, ``reject``, ``modify`` or ``answer``;
- ``cmbtask.io/decision-text``: the text of a ``modify`` or ``answer``;
- ``cmbtask.io/decision-approval``: optional, the approval meant (its id or
  the id's first 8 characters, as the ``Approval`` column shows); without it
  the decision is for the approval pending when the gateway reads it;
- ``cmbtask.io/decided-by``: written by the API server, never by hand: the
  chart's MutatingAdmissionPolicy stamps ``request.userInfo.username`` on any
  request that sets or changes one of the three above, and its
  ValidatingAdmissionPolicy refuses any other value. It is therefore what the
  API server's audit log records as the request's ``user.username``.

The gateway consumes the annotations (removes all four) before it acts, so a
later approval is never decided by a stale one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .phases import ApprovalStatus

__all__ = [
    "DECIDED_BY_ANNOTATION",
    "DECISION_ANNOTATION",
    "DECISION_ANNOTATIONS",
    "DECISION_APPROVAL_ANNOTATION",
    "DECISION_TEXT_ANNOTATION",
    "KUBERNETES_USER_PREFIX",
    "SHORT_ID_CHARS",
    "UNKNOWN_KUBERNETES_USER",
    "CmbTaskApproval",
    "DecisionEventReason",
    "approval_summary",
]

DECISION_ANNOTATION: Final = "cmbtask.io/decision"
DECISION_TEXT_ANNOTATION: Final = "cmbtask.io/decision-text"
DECISION_APPROVAL_ANNOTATION: Final = "cmbtask.io/decision-approval"
DECIDED_BY_ANNOTATION: Final = "cmbtask.io/decided-by"
#: every annotation the gateway removes when it consumes a decision
DECISION_ANNOTATIONS: Final = (
    DECISION_ANNOTATION,
    DECISION_TEXT_ANNOTATION,
    DECISION_APPROVAL_ANNOTATION,
    DECIDED_BY_ANNOTATION,
)
#: ``resolved_by`` of a kubectl decision: this prefix and the Kubernetes user
#: name, so that it never reads as a gateway user of the same name
KUBERNETES_USER_PREFIX: Final = "kubernetes:"
#: ``resolved_by`` when the cluster has no policies to vouch for ``decided-by``
UNKNOWN_KUBERNETES_USER: Final = f"{KUBERNETES_USER_PREFIX}unknown"
#: characters of an approval id that the column shows and a decision may name
SHORT_ID_CHARS: Final = 8


class DecisionEventReason:
    """``reason`` of the Kubernetes Event the gateway reports a decision with."""

    APPLIED: Final = "DecisionApplied"
    #: the approval was no longer pending (or none was): nothing changed
    IGNORED: Final = "DecisionIgnored"
    #: malformed, or a decision the approval does not offer: nothing changed
    REFUSED: Final = "DecisionRefused"


class CmbTaskApproval(BaseModel):
    """``status.approval``: the task's latest approval, as the gateway knows it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    id: str = Field(max_length=64)
    kind: str = Field(max_length=64)
    #: the start of the prompt; the whole one is in the gateway
    prompt: str = Field(default="", max_length=32768)
    options: list[str] = Field(default_factory=list, max_length=16)
    state: ApprovalStatus
    expires_at: datetime | None = None
    resolved_by: str | None = Field(default=None, max_length=256)
    #: what the ``Approval`` column of ``kubectl get ct`` shows
    summary: str = Field(max_length=128)


def approval_summary(state: ApprovalStatus, kind: str, approval_id: str) -> str:
    """``pending plan/1a2b3c4d``: the state, then what a decision may name."""
    return f"{state.value} {kind}/{approval_id[:SHORT_ID_CHARS]}"
