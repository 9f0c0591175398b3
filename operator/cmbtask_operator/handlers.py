"""kopf handlers: CmbTask → runner pod, pod life → CmbTask status.

Each handler is short and delegates to the pure builders (``pods``,
``statuses``) and the idempotent API calls (``kube``). Status writes are
merge patches guarded by the object's resourceVersion; a 409 means someone
else (the gateway, another event) wrote first, so the patch is recomputed
from a fresh read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
import structlog
from cmbtask_protocol import (
    ANNOTATION_TRACEPARENT,
    BUILTIN_ENGINE_PARAMS,
    CRD_GROUP,
    CRD_KIND,
    CRD_PLURAL,
    CRD_VERSION,
    LABEL_MANAGED_BY,
    OPERATOR_NAME,
    CmbTaskSpec,
    TaskPhase,
    task_id_of,
    token_secret_name,
)
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from .expiry import expire_forever
from .kube import Kube, connect
from .pods import PodInput, build_pod, pod_name
from .settings import OperatorSettings
from .statuses import PodReport, final_patch, is_final, read_pod, status_patch

__all__ = ["OperatorMemo", "patch_from_fresh", "refusal", "registry"]

log = structlog.get_logger("cmbtask_operator")
_CMBTASKS = (CRD_GROUP, CRD_VERSION, CRD_PLURAL)
_PATCH_ATTEMPTS = 5


def _now() -> datetime:
    return datetime.now(UTC)


def refusal(spec: CmbTaskSpec, settings: OperatorSettings) -> tuple[str, str] | None:
    """Why the runner image could never run ``spec``: (reason, message), or None."""
    if spec.engine not in settings.engines:
        known = ", ".join(settings.engines)
        return "UnknownEngine", f"unknown engine {spec.engine!r}; this cluster runs: {known}"
    model = BUILTIN_ENGINE_PARAMS.get(spec.engine)
    if model is not None:
        try:
            model.model_validate(spec.params)
        except ValidationError as error:
            return "InvalidParams", f"invalid params for engine {spec.engine!r}: {error}"
    return None


def _owner(pod: Mapping[str, Any]) -> str | None:
    for ref in pod.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == CRD_KIND and ref.get("apiVersion", "").startswith(f"{CRD_GROUP}/"):
            return str(ref["name"])
    return None


def _reference(namespace: str, name: str, uid: str) -> dict[str, Any]:
    # Enough of a body for kopf to post a Kubernetes Event about the CmbTask.
    return {
        "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
        "kind": CRD_KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
    }


async def patch_from_fresh(kube: Kube, namespace: str, name: str, compute: Any) -> dict[str, Any] | None:
    """Read the CmbTask, ``compute(status)`` a patch, write it guarded by the
    read's resourceVersion; on 409 start over. Returns what was written."""
    for _ in range(_PATCH_ATTEMPTS):
        current = await kube.get_cmbtask(namespace, name)
        if current is None:
            return None
        patch = compute(current.get("status") or {})
        if not patch:
            return None
        version = current["metadata"]["resourceVersion"]
        if await kube.patch_status(namespace, name, patch, resource_version=version):
            return dict(patch)
    raise kopf.TemporaryError(f"status of {namespace}/{name} kept changing under us", delay=1)


@dataclass
class OperatorMemo:
    """What every handler shares (kopf hands each object a shallow copy): the
    configuration, and the API client once the startup handler connected."""

    config: OperatorSettings
    kube: Kube | None = None
    expiry: asyncio.Task[None] | None = None

    @property
    def api(self) -> Kube:
        if self.kube is None:
            raise kopf.TemporaryError("not connected to the Kubernetes API yet", delay=1)
        return self.kube


#: every handler below, for ``kopf.operator(registry=…, memo=OperatorMemo(…))``
registry = kopf.OperatorRegistry()


@kopf.on.startup(id="connect", registry=registry)
async def connect_api(settings: kopf.OperatorSettings, memo: OperatorMemo, **_: Any) -> None:
    _configure_kopf(settings, memo.config)
    memo.kube = Kube(await connect())
    if not memo.config.standalone:
        await _ensure_peering(memo.kube, memo.config)
    memo.expiry = asyncio.create_task(expire_forever(memo.kube, memo.config), name="expiry")


@kopf.on.login(id="login", registry=registry)
async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # A private registry gets none of kopf's default login handlers. The
    # client library's in-cluster login finds the API server as every client
    # does (KUBERNETES_SERVICE_HOST), not by the cluster DNS name kopf's own
    # service-account login dials; then KUBECONFIG.
    return await kopf.login_via_async_client(**kwargs)


@kopf.on.cleanup(id="disconnect", registry=registry)
async def disconnect(memo: OperatorMemo, **_: Any) -> None:
    if memo.expiry is not None:
        memo.expiry.cancel()
    if memo.kube is not None:
        await memo.kube.close()


@kopf.on.resume(*_CMBTASKS, id="launch", registry=registry)
@kopf.on.create(*_CMBTASKS, id="launch", registry=registry)
async def launch(
    name: str, namespace: str | None, uid: str, spec: kopf.Spec, status: kopf.Status, body: kopf.Body,
    meta: kopf.Meta, patch: kopf.Patch, memo: OperatorMemo, **_: Any,
) -> None:  # fmt: skip
    if is_final(status.get("phase")):
        return
    task, problem = await _launch_problem(memo, _namespaced(namespace), name, spec, status, meta)
    if task is not None and problem is None:
        source = PodInput(
            name=name,
            namespace=_namespaced(namespace),
            uid=uid,
            spec=task,
            settings=memo.config,
            traceparent=meta.get("annotations", {}).get(ANNOTATION_TRACEPARENT),
        )
        problem = await _create_pod(memo.api, source, status, patch)
    if problem is not None:
        _refuse(patch, status, body, problem)


@kopf.on.event("v1", "pods", id="mirror", labels={LABEL_MANAGED_BY: OPERATOR_NAME}, registry=registry)
async def mirror_pod(event: kopf.RawEvent, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    owner, namespace = _owner(body), body.metadata.namespace
    if owner is None or namespace is None:
        return
    if event["type"] == "DELETED":
        await _pod_deleted(memo.api, namespace, owner)
        return
    report = read_pod(body)
    if report is not None:
        await _mirror(memo.api, namespace, owner, body, report)


@kopf.on.field(*_CMBTASKS, id="cancel", field="spec.cancel", new=True, registry=registry)
async def cancel(name: str, namespace: str | None, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    # Status first: the pod's deletion must find the task already final.
    if await patch_from_fresh(memo.api, _namespaced(namespace), name, _cancelled):
        kopf.info(body, reason="Cancelled", message="cancelled on request; deleting the runner pod")
    await memo.api.delete_pod(_namespaced(namespace), pod_name(name), grace_s=memo.config.pod_grace_s)
    log.info("cmbtask.cancelled", cmbtask=name, namespace=namespace)


def _cancelled(status: Mapping[str, Any]) -> dict[str, Any] | None:
    if is_final(status.get("phase")):
        return None
    return final_patch(status, TaskPhase.CANCELLED, "Cancelled", "cancelled on request", _now())


async def _launch_problem(
    memo: OperatorMemo, namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta
) -> tuple[CmbTaskSpec | None, tuple[TaskPhase, str, str] | None]:
    """The validated spec, and why not to make its pod (or None)."""
    try:
        task = CmbTaskSpec.model_validate(dict(spec))
    except ValidationError as error:  # what the schema cannot say; retrying would not help
        return None, (TaskPhase.FAILED, "InvalidSpec", str(error)[:4000])
    problem = await _problem(memo.api, namespace, name, task, meta, memo.config)
    if problem is None and await _pod_lost(memo.api, namespace, status):
        problem = TaskPhase.FAILED, "PodDeleted", "the runner pod was deleted while the operator was away"
    return task, problem


async def _create_pod(
    kube: Kube, source: PodInput, status: kopf.Status, patch: kopf.Patch
) -> tuple[TaskPhase, str, str] | None:
    """Create the runner pod (idempotent) and record it; a refusal for good is returned."""
    pod = build_pod(source)
    try:
        created = await kube.create_pod(source.namespace, pod)
    except ApiException as error:
        if error.status not in (400, 403, 422):
            raise  # kopf retries the transient ones
        return TaskPhase.FAILED, "PodRefused", f"pod not created: {error.reason}: {error.body!s}"[:4000]
    task_id = task_id_of(source.uid, source.spec)
    log.info(
        "cmbtask.pod_created" if created else "cmbtask.pod_exists",
        cmbtask=source.name, task_id=task_id, pod=pod["metadata"]["name"],
    )  # fmt: skip
    patch.status.update(_launched(status, pod["metadata"]["name"], task_id))
    return None


async def _mirror(kube: Kube, namespace: str, owner: str, body: kopf.Body, report: PodReport) -> None:
    """Pod life → the owning CmbTask's status; a pod that can never succeed is removed."""
    written = await patch_from_fresh(kube, namespace, owner, lambda s: status_patch(report, s, _now()))
    if written:
        log.info("cmbtask.status", cmbtask=owner, namespace=namespace, phase=written.get("phase"))
    if not report.fail_fast:
        return
    await kube.delete_pod(namespace, body.metadata.name, grace_s=0)
    if written:
        uid = body.metadata.get("ownerReferences", [{}])[0].get("uid", "")
        kopf.warn(
            kopf.Body(cast(kopf.RawBody, _reference(namespace, owner, uid))),
            reason=report.reason or "Failed",
            message=report.message or "",
        )


def _configure_kopf(settings: kopf.OperatorSettings, operator: OperatorSettings) -> None:
    # Progress and diff-base in our own annotations, not in status: the CRD's
    # status schema belongs to the task, and kopf's defaults would be pruned.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=CRD_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=CRD_GROUP)
    settings.persistence.finalizer = f"{CRD_GROUP}/operator"
    # Handler log lines stay in our logs; only warnings become Kubernetes Events.
    settings.posting.level = logging.WARNING
    settings.peering.name = operator.peering_name
    settings.peering.priority = operator.priority
    settings.peering.standalone = operator.standalone
    settings.peering.mandatory = not operator.standalone
    settings.peering.clusterwide = not operator.namespaces
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30


async def _ensure_peering(kube: Kube, config: OperatorSettings) -> None:
    # Peering is mandatory: without its object kopf would refuse to start.
    namespaces: list[str | None] = list(config.namespaces) or [None]
    for namespace in namespaces:
        if not await kube.ensure_peering(config.peering_name, namespace):
            log.warning("peering.not_created", peering=config.peering_name, namespace=namespace)


def _namespaced(namespace: str | None) -> str:
    if namespace is None:  # CmbTask is a namespaced kind; kopf types it loosely
        raise kopf.PermanentError("a CmbTask without a namespace")
    return namespace


async def _problem(
    kube: Kube, namespace: str, name: str, task: CmbTaskSpec, meta: kopf.Meta, config: OperatorSettings
) -> tuple[TaskPhase, str, str] | None:
    """Why not to create a pod now: (final phase, reason, message), or None."""
    if task.cancel:
        return TaskPhase.CANCELLED, "Cancelled", "cancelled before it started"
    refused = refusal(task, config)
    if refused is not None:
        return TaskPhase.FAILED, *refused
    if not await _secret_ready(kube, namespace, name, task, meta, config):
        secret = token_secret_name(name, task)
        return TaskPhase.FAILED, "MissingSecret", f"Secret {secret!r} with the runner token not found"
    return None


async def _pod_lost(kube: Kube, namespace: str, status: Mapping[str, Any]) -> bool:
    """On resume: the pod this task ran in is gone (its deletion happened
    unseen). Making another would run the task twice."""
    pod = status.get("podName")
    return bool(pod) and not await kube.pod_exists(namespace, str(pod))


async def _secret_ready(
    kube: Kube, namespace: str, name: str, task: CmbTaskSpec, meta: kopf.Meta, config: OperatorSettings
) -> bool:
    """True when the token Secret exists; waits (bounded) for the gateway to
    make it, then False."""
    if await kube.secret_exists(namespace, token_secret_name(name, task)):
        return True
    created = _parse_time(meta.get("creationTimestamp")) or _now()
    if _now() - created < timedelta(seconds=config.secret_wait_s):
        raise kopf.TemporaryError("waiting for the runner token Secret", delay=1)
    return False


async def _pod_deleted(kube: Kube, namespace: str, owner: str) -> None:
    """A pod vanished before its task ended (deleted by hand, evicted)."""

    def lost(status: Mapping[str, Any]) -> dict[str, Any] | None:
        if is_final(status.get("phase")) or not status.get("podName"):
            return None
        return final_patch(status, TaskPhase.FAILED, "PodDeleted", "the runner pod was deleted", _now())

    await patch_from_fresh(kube, namespace, owner, lost)


def _refuse(
    patch: kopf.Patch, status: Mapping[str, Any], body: kopf.Body, problem: tuple[TaskPhase, str, str]
) -> None:
    """End the task without a pod: final status and, for failures, a Warning Event."""
    phase, reason, message = problem
    patch.status.update(final_patch(status, phase, reason, message, _now()))
    if phase is TaskPhase.FAILED:
        kopf.warn(body, reason=reason, message=message)
    log.warning("cmbtask.not_launched", cmbtask=body.metadata.name, reason=reason)


def _launched(status: Mapping[str, Any], pod: str, task_id: str) -> dict[str, Any]:
    update: dict[str, Any] = {"podName": pod, "taskId": task_id}
    if status.get("phase") in (None, TaskPhase.QUEUED.value):
        update["phase"] = TaskPhase.STARTING.value
    return update


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
