"""The ``CmbTask`` custom resource: spec, status and the generated CRD.

The gateway's kubernetes executor writes ``CmbTask`` objects, the operator
turns them into runner pods and users apply them with kubectl; all three read
the shapes from here. The CRD's ``openAPIV3Schema`` is generated from these
models (``python -m cmbtask_protocol.crdgen [PATH]``), so that the API server
refuses what the operator could not run. A test fails when the committed
manifest drifts from the models.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .api import MAX_PROMPT_CHARS
from .crd_approvals import CmbTaskApproval
from .phases import OnTimeout, TaskPhase
from .retries import MAX_RETRIES, MAX_RETRY_DELAY_S

__all__ = [
    "ANNOTATION_TRACEPARENT",
    "CRD_GROUP",
    "CRD_KIND",
    "CRD_NAME",
    "CRD_PLURAL",
    "CRD_SHORT_NAME",
    "CRD_SINGULAR",
    "CRD_VERSION",
    "LABEL_MANAGED_BY",
    "LABEL_TASK",
    "OPERATOR_NAME",
    "TOKEN_SECRET_KEY",
    "CmbTaskCondition",
    "CmbTaskResources",
    "CmbTaskSpec",
    "CmbTaskStatus",
    "ConditionStatus",
    "ConditionType",
    "ResourceList",
    "cmbtask_name_for_task",
    "crd_manifest",
    "dns_label",
    "set_condition",
    "task_id_of",
    "timestamp",
    "token_secret_name",
]

CRD_GROUP: Final = "cmbtask.io"
CRD_VERSION: Final = "v1alpha1"
CRD_KIND: Final = "CmbTask"
CRD_PLURAL: Final = "cmbtasks"
CRD_SINGULAR: Final = "cmbtask"
CRD_SHORT_NAME: Final = "ct"
CRD_NAME: Final = f"{CRD_PLURAL}.{CRD_GROUP}"

OPERATOR_NAME: Final = "cmbtask-operator"
#: label on every pod the operator makes, so it watches only its own pods
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
#: label naming the owning CmbTask (a DNS label, see ``dns_label``)
LABEL_TASK: Final = f"{CRD_GROUP}/cmbtask"
#: annotation carrying the launch's W3C traceparent to the operator, which
#: hands it to the runner pod as ``ENV_TRACEPARENT`` (metadata, not desired state)
ANNOTATION_TRACEPARENT: Final = f"{CRD_GROUP}/traceparent"
#: key inside the token Secret that holds the runner's bearer token
TOKEN_SECRET_KEY: Final = "token"

_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_TASK_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_TIMEOUT_S: Final = 7 * 24 * 3600


class _Camel(BaseModel):
    # Kubernetes objects spell fields in camelCase; Python code uses snake_case.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ResourceList(_Camel):
    cpu: str | None = Field(default=None, pattern=_QUANTITY, max_length=32)
    memory: str | None = Field(default=None, pattern=_QUANTITY, max_length=32)


class CmbTaskResources(_Camel):
    """Requests and limits of the runner container; unset ones come from operator settings."""

    requests: ResourceList | None = None
    limits: ResourceList | None = None


class CmbTaskSpec(_Camel):
    """What to run. Mirrors ``TaskCreate`` plus where and how to run it."""

    engine: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
    mode: str = Field(default="one-shot", min_length=1, max_length=64)
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    params: dict[str, Any] = Field(default_factory=dict)
    #: the gateway's task id; when unset the object's uid is the task id
    task_id: str | None = Field(default=None, max_length=64, pattern=_TASK_ID)
    session_id: str | None = Field(default=None, max_length=64, pattern=_TASK_ID)
    #: the user the task belongs to in the gateway
    owner: str | None = Field(default=None, min_length=1, max_length=200)
    timeout_seconds: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S)
    approval_timeout_seconds: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S)
    on_timeout: OnTimeout = OnTimeout.REJECT
    #: the gateway runs the task again, in a new CmbTask, this often at most if its
    #: pod dies (evicted, OOMKilled, deleted); see ``cmbtask_protocol.retries``
    retries: int = Field(default=0, ge=0, le=MAX_RETRIES)
    #: seconds before the first retry (doubling for each further one); the default when unset
    retry_backoff_seconds: int | None = Field(default=None, ge=0, le=int(MAX_RETRY_DELAY_S))
    #: which run of its task this object is (set by the gateway on the ones it makes)
    attempt: int = Field(default=1, ge=1, le=MAX_RETRIES + 1)
    image: str | None = Field(default=None, min_length=1, max_length=512)
    resources: CmbTaskResources | None = None
    #: where the runner dials back; the operator's setting when unset
    gateway_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    #: Secret (same namespace) with the runner token under key ``token``;
    #: ``<name>-token`` when unset
    token_secret_name: str | None = Field(default=None, max_length=253, pattern=_DNS_SUBDOMAIN)
    #: set to true to cancel: the operator deletes the pod, the phase becomes ``cancelled``
    cancel: bool = False
    #: delete the object this long after it finished; the operator's setting when unset
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=365 * 24 * 3600)


class ConditionType(StrEnum):
    POD_SCHEDULED = "PodScheduled"
    RUNNING = "Running"
    AWAITING_APPROVAL = "AwaitingApproval"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class CmbTaskCondition(_Camel):
    """The standard ``metav1.Condition`` shape."""

    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    last_transition_time: datetime
    reason: str = Field(default="", max_length=1024)
    message: str = Field(default="", max_length=32768)
    observed_generation: int | None = Field(default=None, ge=0)


class CmbTaskStatus(_Camel):
    model_config = ConfigDict(extra="allow")

    phase: TaskPhase | None = None
    task_id: str | None = None
    pod_name: str | None = None
    start_time: datetime | None = None
    finish_time: datetime | None = None
    exit_code: int | None = None
    #: one CamelCase word: OOMKilled, ErrImagePull, DeadlineExceeded, UnknownEngine …
    reason: str | None = Field(default=None, max_length=1024)
    message: str | None = Field(default=None, max_length=32768)
    #: the task's latest approval, written by the gateway (see ``crd_approvals``)
    approval: CmbTaskApproval | None = None
    observed_generation: int | None = None
    conditions: list[CmbTaskCondition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


# ---- naming -----------------------------------------------------------------


def dns_label(base: str, suffix: str = "", *, max_length: int = 63) -> str:
    """A valid DNS label made from ``base`` + ``suffix``, deterministic.

    Invalid characters become ``-``; when anything had to change or the result
    would be too long, a hash of the original keeps different inputs apart.
    """
    clean = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-") or "x"
    if clean == base and len(clean) + len(suffix) <= max_length:
        return clean + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:10]
    room = max_length - len(suffix) - len(digest) - 1
    return f"{clean[:room].rstrip('-')}-{digest}{suffix}"


def cmbtask_name_for_task(task_id: str, attempt: int = 1) -> str:
    """The name the gateway gives the ``CmbTask`` of one of its tasks (of a
    retry's ``attempt``: each attempt runs in an object of its own)."""
    return dns_label(f"task-{task_id}", "" if attempt == 1 else f"-a{attempt}")


def token_secret_name(name: str, spec: CmbTaskSpec) -> str:
    return spec.token_secret_name or dns_label(name, "-token", max_length=253)


def task_id_of(uid: str, spec: CmbTaskSpec) -> str:
    """The gateway task id of an object: its spec's, else its uid (kubectl-made)."""
    return spec.task_id or uid


# ---- conditions ---------------------------------------------------------------


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    kind: ConditionType,
    status: ConditionStatus,
    now: datetime,
    reason: str = "",
    message: str = "",
) -> list[dict[str, Any]]:
    """``conditions`` with ``kind`` set; its transition time moves only when
    its status changes."""
    out = [dict(c) for c in conditions if c.get("type") != kind.value]
    previous = next((c for c in conditions if c.get("type") == kind.value), None)
    kept = previous if previous is not None and previous.get("status") == status.value else {}
    out.append(
        {
            "type": kind.value,
            "status": status.value,
            "lastTransitionTime": kept.get("lastTransitionTime") or timestamp(now),
            "reason": reason or kept.get("reason", ""),
            "message": message or kept.get("message", ""),
        }
    )
    return sorted(out, key=lambda c: str(c["type"]))


# ---- CRD generation -----------------------------------------------------------

# JSON Schema keywords that structural OpenAPI v3 schemas accept as they are.
_KEEP = {
    "type", "format", "description", "enum", "pattern", "minLength", "maxLength",
    "minimum", "maximum", "minItems", "maxItems", "required", "default",
}  # fmt: skip


def _openapi(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn pydantic's JSON Schema into a structural Kubernetes schema:
    no ``$ref``, nullable instead of ``anyOf: [..., null]``, boolean
    exclusive bounds, free-form maps marked to keep unknown fields."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _openapi(merged, defs)
    variants = schema.get("anyOf")
    if variants is not None:
        others = [v for v in variants if v.get("type") != "null"]
        if len(others) != 1:
            raise ValueError(f"cannot express union in a structural schema: {variants}")
        inner = _openapi({**others[0], **{k: v for k, v in schema.items() if k != "anyOf"}}, defs)
        inner["nullable"] = True
        inner.pop("default", None)
        return inner
    out = {k: v for k, v in schema.items() if k in _KEEP or k.startswith("x-kubernetes-")}
    for bound in ("Minimum", "Maximum"):
        if f"exclusive{bound}" in schema:
            out[bound.lower()] = schema[f"exclusive{bound}"]
            out[f"exclusive{bound}"] = True
    if out.get("default") is None:
        out.pop("default", None)
    if "properties" in schema:
        out["properties"] = {k: _openapi(v, defs) for k, v in schema["properties"].items()}
    if "items" in schema:
        out["items"] = _openapi(schema["items"], defs)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        out["additionalProperties"] = _openapi(extra, defs)
    elif _is_free_form(schema):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _is_free_form(schema: dict[str, Any]) -> bool:
    """``dict[str, Any]``, ``Any`` and models that allow extra keys."""
    if schema.get("additionalProperties") is True:
        return True
    if schema.get("type") == "object":
        return "properties" not in schema
    return "type" not in schema and "enum" not in schema


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _openapi(raw, raw.get("$defs", {}))


def _printer_columns() -> list[dict[str, Any]]:
    def col(name: str, path: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
        return {"name": name, "type": kind, "jsonPath": path, **extra}

    return [
        col("Phase", ".status.phase"),
        col("Session", ".spec.sessionId"),
        col("Mode", ".spec.mode"),
        col("Pod", ".status.podName"),
        col("Approval", ".status.approval.summary", description="the latest approval: state kind/id"),
        col("Engine", ".spec.engine", priority=1),
        col("Reason", ".status.reason", priority=1),
        col("Age", ".metadata.creationTimestamp", "date"),
    ]


def crd_manifest() -> dict[str, Any]:
    """The ``CustomResourceDefinition`` for ``CmbTask``."""
    root = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _model_schema(CmbTaskSpec),
            "status": _model_schema(CmbTaskStatus),
        },
        "required": ["spec"],
    }
    version: dict[str, Any] = {
        "name": CRD_VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": root},
        "subresources": {"status": {}},
        "additionalPrinterColumns": _printer_columns(),
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": CRD_KIND,
                "plural": CRD_PLURAL,
                "singular": CRD_SINGULAR,
                "shortNames": [CRD_SHORT_NAME],
                "categories": ["cmbtask"],
            },
            "versions": [version],
        },
    }
