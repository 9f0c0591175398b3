"""The runner pod of a ``CmbTask``, built by a pure function.

Everything a pod needs is in one typed input, so the builder is tested
without a cluster. The pod's name is a function of the CmbTask's name alone:
a retried or re-run handler asks for the same name and gets a 409 instead of
a second pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cmbtask_protocol import (
    CRD_GROUP,
    CRD_KIND,
    CRD_VERSION,
    ENV_GATEWAY_URL,
    ENV_TASK_ID,
    ENV_TASK_TOKEN,
    ENV_TRACEPARENT,
    ENV_WORK_DIR,
    LABEL_MANAGED_BY,
    LABEL_TASK,
    OPERATOR_NAME,
    PROVIDER_KEY_VARIABLES,
    TOKEN_SECRET_KEY,
    CmbTaskSpec,
    ResourceList,
    dns_label,
    task_id_of,
    token_secret_name,
)

from .settings import OperatorSettings

__all__ = [
    "ANNOTATION_TASK_ID",
    "LABEL_SESSION",
    "RUNNER_CONTAINER",
    "PodInput",
    "build_pod",
    "pod_name",
    "quantity",
    "task_label",
]

RUNNER_CONTAINER = "runner"
ANNOTATION_TASK_ID = f"{CRD_GROUP}/task-id"
LABEL_SESSION = f"{CRD_GROUP}/session"
_WORK_VOLUME = "work"
_TMP_VOLUME = "tmp"


@dataclass(frozen=True, slots=True)
class PodInput:
    """One CmbTask as the pod builder sees it."""

    name: str
    namespace: str
    uid: str
    spec: CmbTaskSpec
    settings: OperatorSettings
    #: the gateway's launch span (``ANNOTATION_TRACEPARENT``): the runner's spans join its trace
    traceparent: str | None = None


def pod_name(cmbtask_name: str) -> str:
    # A DNS label, not just a subdomain: the pod's hostname is its name.
    return dns_label(cmbtask_name, "-runner")


def task_label(cmbtask_name: str) -> str:
    return dns_label(cmbtask_name)


def build_pod(source: PodInput) -> dict[str, Any]:
    """The pod manifest for ``source``; owned by the CmbTask, so deleting
    the CmbTask garbage-collects the pod."""
    spec = source.spec
    metadata: dict[str, Any] = {
        "name": pod_name(source.name),
        "namespace": source.namespace,
        "labels": _labels(source),
        "annotations": {ANNOTATION_TASK_ID: task_id_of(source.uid, spec)},
        "ownerReferences": [_owner_reference(source)],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(source.settings),
        "containers": [_container(source)],
        "volumes": [
            {"name": _WORK_VOLUME, "emptyDir": {"sizeLimit": source.settings.work_dir_size_limit}},
            {"name": _TMP_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}},
        ],
        "terminationGracePeriodSeconds": source.settings.pod_grace_s,
    }
    _add_scheduling(pod_spec, source.settings)
    if spec.timeout_seconds is not None:
        pod_spec["activeDeadlineSeconds"] = spec.timeout_seconds + source.settings.deadline_grace_s
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def _add_scheduling(pod_spec: dict[str, Any], settings: OperatorSettings) -> None:
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in settings.tolerations]
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [
            {"name": s} if isinstance(s, str) else dict(s) for s in settings.image_pull_secrets
        ]


def _labels(source: PodInput) -> dict[str, str]:
    labels = {
        LABEL_MANAGED_BY: OPERATOR_NAME,
        "app.kubernetes.io/name": "cmbtask-runner",
        "app.kubernetes.io/component": "runner",
        LABEL_TASK: task_label(source.name),
    }
    if source.spec.session_id:
        labels[LABEL_SESSION] = dns_label(source.spec.session_id)
    return labels


def _owner_reference(source: PodInput) -> dict[str, Any]:
    return {
        "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
        "kind": CRD_KIND,
        "name": source.name,
        "uid": source.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _pod_security(settings: OperatorSettings) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_user,
        "fsGroup": settings.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container(source: PodInput) -> dict[str, Any]:
    settings = source.settings
    return {
        "name": RUNNER_CONTAINER,
        "image": source.spec.image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(settings.runner_command),
        "env": _env(source),
        "resources": _resources(source),
        "workingDir": settings.work_dir,
        "volumeMounts": [
            {"name": _WORK_VOLUME, "mountPath": settings.work_dir},
            {"name": _TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _env(source: PodInput) -> list[dict[str, Any]]:
    spec = source.spec
    secret = token_secret_name(source.name, spec)
    secret_ref = {"name": secret, "key": TOKEN_SECRET_KEY}
    # The owner's provider keys travel in the same per-task Secret, each under its
    # variable's name; optional, since a user stores only some (or none).
    keys = [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": var, "optional": True}}}
        for var in PROVIDER_KEY_VARIABLES.values()
    ]
    return [
        {"name": ENV_TASK_ID, "value": task_id_of(source.uid, spec)},
        {"name": ENV_GATEWAY_URL, "value": spec.gateway_url or source.settings.gateway_url},
        {"name": ENV_TASK_TOKEN, "valueFrom": {"secretKeyRef": secret_ref}},
        {"name": ENV_WORK_DIR, "value": source.settings.work_dir},
        {"name": "HOME", "value": source.settings.work_dir},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *keys,
        *_tracing_env(source),
    ]


def _tracing_env(source: PodInput) -> list[dict[str, Any]]:
    """The trace context, and where the runner sends its spans (the admin's
    ``runner_env``, e.g. ``OTEL_EXPORTER_OTLP_ENDPOINT``): a runner traces
    only when both the gateway and the admin asked for it."""
    settings_env = [
        {"name": key, "value": value} for key, value in sorted(source.settings.runner_env.items())
    ]
    if source.traceparent:
        settings_env.append({"name": ENV_TRACEPARENT, "value": source.traceparent})
    return settings_env


def _resources(source: PodInput) -> dict[str, dict[str, str]]:
    settings = source.settings
    wanted = source.spec.resources
    requests = _pick(wanted.requests if wanted else None, settings.cpu_request, settings.memory_request)
    limits = _pick(wanted.limits if wanted else None, settings.cpu_limit, settings.memory_limit)
    # A small limit from the spec must not sit below a default request:
    # the API server refuses such a pod.
    for key, limit in limits.items():
        if quantity(requests[key]) > quantity(limit):
            requests[key] = limit
    return {"requests": requests, "limits": limits}


def _pick(given: ResourceList | None, cpu: str, memory: str) -> dict[str, str]:
    return {
        "cpu": (given.cpu if given and given.cpu else cpu),
        "memory": (given.memory if given and given.memory else memory),
    }


_SUFFIXES = {
    "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def quantity(text: str) -> float:
    """A Kubernetes quantity (``500m``, ``1Gi``) as a number, for comparing."""
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(text)
