"""The ``kubernetes`` executor: one ``CmbTask`` object per task.

``launch`` writes the runner token into a Secret and creates the CmbTask;
the operator makes the pod, whose runner dials back like a local one. The
handle is ``"<namespace>/<name>"``: the object is the source of truth, so
``inspect`` and ``adopt`` read it again after a gateway restart.

Two background loops tie the cluster to the gateway's records:

- import: a CmbTask applied with kubectl (no task id in its spec) gets a
  session and a task here, the task's id being the object's uid (see
  ``k8s_records``); the dispatcher then launches that task, and ``launch``
  recognises the object by its task-id label, or by its uid if a crash came
  before the label, instead of making another one.
- sync: the task's latest approval (``status.approval``, the gateway's alone
  to write) and the phases the gateway knows are written into the CmbTask's
  status, so ``kubectl get cmbtasks`` shows them. Writes are guarded by
  resourceVersion so they never overwrite the operator's newer final phase.
- decisions: ``kubectl annotate ct NAME cmbtask.io/decision=approve`` is
  consumed (the annotations removed, guarded by resourceVersion, so one
  replica wins) and then applied through the approval service; a Kubernetes
  Event on the object says what came of it (see ``k8s_decisions``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from cmbtask_protocol import (
    ANNOTATION_TRACEPARENT,
    CRD_GROUP,
    CRD_KIND,
    CRD_PLURAL,
    CRD_VERSION,
    DECISION_ANNOTATION,
    PROVIDER_KEY_VARIABLES,
    TOKEN_SECRET_KEY,
    CmbTaskSpec,
    DecisionEventReason,
    TaskPhase,
    cmbtask_name_for_task,
    dns_label,
    pod_died,
    token_secret_name,
)
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from ..settings import Settings
from .base import ExecutorError, ExecutorStatus, LaunchRequest
from .k8s_decisions import DecisionError, Outcome, consume_patch, event_body, read_decision
from .k8s_records import ImportedIds, Records
from .k8s_statuses import stale_approval_ids, status_change

__all__ = ["KubernetesExecutor"]

log = structlog.get_logger("cmbtask_gateway.executors.kubernetes")
#: who reports the Events; a pod's hostname is its name
_INSTANCE = os.environ.get("HOSTNAME") or socket.gethostname()

LABEL_ORIGIN = f"{CRD_GROUP}/origin"
LABEL_TASK_ID = f"{CRD_GROUP}/task-id"
# CRDs take no strategic merge patch; say which patch this is.
_MERGE: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
_SYNC_EVERY_S = 1.0


class KubernetesExecutor:
    name: str = "kubernetes"

    def __init__(self, settings: Settings, records: Records) -> None:
        self._settings = settings
        self._records = records
        self._namespace = settings.kubernetes_namespace
        self._api: client.ApiClient | None = None
        self._lock = asyncio.Lock()
        self._loops: list[asyncio.Task[None]] = []
        #: last CmbTask seen per name, from the watch (for guarded status writes)
        self._seen: dict[str, dict[str, Any]] = {}

    # ---- clients ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except ConfigException:
            await config.load_kube_config()
        self._api = client.ApiClient()
        self._loops = [
            asyncio.create_task(self._watch(), name="k8s-watch"),
            asyncio.create_task(self._sync(), name="k8s-sync"),
        ]

    @property
    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self._require_api())

    @property
    def _core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._require_api())

    def _require_api(self) -> client.ApiClient:
        if self._api is None:
            raise ExecutorError("the kubernetes executor was not started")
        return self._api

    async def close(self) -> None:
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        if self._api is not None:
            await self._api.close()

    # ---- the executor interface ------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> str:
        async with self._lock:  # an import in flight finishes labelling first
            if request.attempt == 1:
                imported = await self._imported_name(request.task_id)
                name, own_keys = imported or await self._create(request), imported is None
            else:
                # A retry runs in a CmbTask of its own (the earlier attempt's has ended);
                # one of a kubectl-made task gets no user's keys, as its first did not.
                name = await self._create(request)
                own_keys = not await self._list(
                    f"{LABEL_TASK_ID}={dns_label(request.task_id)},{LABEL_ORIGIN}=kubectl"
                )
        keys = self._provider_env(request, own_keys=own_keys)
        await self._write_secret(name, {TOKEN_SECRET_KEY: request.token, **keys})
        log.info("k8s.launched", task_id=request.task_id, session_id=request.session_id, cmbtask=name)
        return f"{self._namespace}/{name}"

    async def cancel(self, handle: str, *, grace_s: float) -> None:
        namespace, name = _split(handle)
        with contextlib.suppress(ApiException):
            await self._custom.patch_namespaced_custom_object(
                CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL, name, {"spec": {"cancel": True}}, **_MERGE
            )

    async def inspect(self, handle: str) -> ExecutorStatus:
        namespace, name = _split(handle)
        try:
            found = await self._custom.get_namespaced_custom_object(
                CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return ExecutorStatus(handle, alive=False, reason="the CmbTask was deleted")
            raise ExecutorError(f"cannot read CmbTask {handle}: {error.reason}") from error
        status = cast(dict[str, Any], found).get("status") or {}
        phase = status.get("phase")
        if phase is None or not TaskPhase(phase).is_final:
            return ExecutorStatus(handle, alive=True)
        reason = status.get("message") or status.get("reason") or f"pod ended {phase}"
        code = status.get("exitCode")
        died = pod_died(status.get("reason"), code)
        return ExecutorStatus(handle, alive=False, exit_code=code, reason=reason, died=died)

    async def adopt(self, handles: Sequence[str]) -> list[ExecutorStatus]:
        return [await self.inspect(handle) for handle in handles]

    # ---- launching ----------------------------------------------------------------------

    async def _imported_name(self, task_id: str) -> str | None:
        """The kubectl-made CmbTask this task was registered for, if any."""
        labelled = await self._list(f"{LABEL_TASK_ID}={dns_label(task_id)}")
        if labelled:
            return str(labelled[0]["metadata"]["name"])
        # Registered by a gateway that died before labelling the object: the
        # task id comes from the object's uid, so the object is still found.
        for obj in await self._list(f"!{LABEL_ORIGIN}"):
            if ImportedIds(obj["metadata"]["uid"]).task_id == task_id:
                return str(obj["metadata"]["name"])
        return None

    async def _list(self, label_selector: str) -> list[dict[str, Any]]:
        found = await self._custom.list_namespaced_custom_object(
            CRD_GROUP, CRD_VERSION, self._namespace, CRD_PLURAL, label_selector=label_selector
        )
        return list(cast(dict[str, Any], found).get("items") or [])

    async def _create(self, request: LaunchRequest) -> str:
        name = cmbtask_name_for_task(request.task_id, request.attempt)
        spec: dict[str, Any] = {
            "attempt": request.attempt,
            "engine": request.engine,
            "mode": request.mode,
            "taskId": request.task_id,
            "sessionId": request.session_id,
            "owner": request.owner,
            "gatewayUrl": request.gateway_url,
            "image": self._settings.kubernetes_runner_image,
            # the operator validates them for the engine before it makes the pod;
            # provider keys go in the per-task Secret, never in the spec
            "params": dict(request.params),
        }
        if request.timeout_s is not None:
            spec["timeoutSeconds"] = max(1, math.ceil(request.timeout_s))
        metadata: dict[str, Any] = {
            "name": name,
            "labels": {LABEL_ORIGIN: "gateway", LABEL_TASK_ID: dns_label(request.task_id)},
        }
        if request.trace_parent:
            # The operator hands it to the runner pod (``ENV_TRACEPARENT``).
            metadata["annotations"] = {ANNOTATION_TRACEPARENT: request.trace_parent}
        body = {
            "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
            "kind": CRD_KIND,
            "metadata": metadata,
            "spec": spec,
        }
        try:
            await self._custom.create_namespaced_custom_object(
                CRD_GROUP, CRD_VERSION, self._namespace, CRD_PLURAL, body
            )
        except ApiException as error:
            if error.status != 409:  # 409: a retried launch; the object is ours already
                raise ExecutorError(f"cannot create CmbTask {name}: {error.reason}") from error
        return name

    def _provider_env(self, request: LaunchRequest, *, own_keys: bool) -> dict[str, str]:
        """The keys the pod gets, through the per-task Secret: its owner's, and the
        gateway's own for the rest only when the admin opted in. A CmbTask applied
        with kubectl names its owner without proving it: it gets no user's keys."""
        fallback: dict[str, str] = {}
        if self._settings.provider_keys_fallback:
            fallback = {v: os.environ[v] for v in PROVIDER_KEY_VARIABLES.values() if os.environ.get(v)}
        return {**fallback, **(request.provider_env if own_keys else {})}

    async def _write_secret(self, name: str, data: dict[str, str]) -> None:
        """The per-task Secret (runner token, provider keys), owned by the CmbTask
        so that deleting the CmbTask deletes it."""
        owner = await self._custom.get_namespaced_custom_object(
            CRD_GROUP, CRD_VERSION, self._namespace, CRD_PLURAL, name
        )
        found = cast(dict[str, Any], owner)
        uid = found["metadata"]["uid"]
        secret_name = token_secret_name(name, CmbTaskSpec.model_validate(found["spec"]))
        body = {
            "metadata": {
                "name": secret_name,
                "ownerReferences": [
                    {"apiVersion": f"{CRD_GROUP}/{CRD_VERSION}", "kind": CRD_KIND, "name": name, "uid": uid}
                ],
            },
            "type": "Opaque",
            "stringData": data,
        }
        try:
            await self._core.create_namespaced_secret(self._namespace, cast(Any, body))
        except ApiException as error:
            if error.status != 409:
                raise ExecutorError(f"cannot create Secret {secret_name}: {error.reason}") from error
            await self._core.patch_namespaced_secret(secret_name, self._namespace, cast(Any, body))

    # ---- import of kubectl-made CmbTasks, status sync ------------------------------------

    async def _watch(self) -> None:
        while True:
            try:
                stream = watch.Watch().stream(
                    self._custom.list_namespaced_custom_object, CRD_GROUP, CRD_VERSION, self._namespace,
                    CRD_PLURAL, timeout_seconds=120,
                )  # fmt: skip
                async for event in stream:
                    await self._on_event(event["type"], event["raw_object"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("k8s.watch_error")
                await asyncio.sleep(1)

    async def _on_event(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self._seen.pop(name, None)
            return
        self._seen[name] = obj
        labels = obj["metadata"].get("labels") or {}
        task_id = obj.get("spec", {}).get("taskId")
        if not (labels.get(LABEL_ORIGIN) or task_id):
            async with self._lock:
                await self._import(obj)
        elif task_id and DECISION_ANNOTATION in (obj["metadata"].get("annotations") or {}):
            await self._decide(obj, task_id)

    async def _decide(self, obj: dict[str, Any], task_id: str) -> None:
        """One kubectl decision: claimed (its annotations removed) first, so that
        it is applied once, by one replica, and never to a later approval."""
        meta = obj["metadata"]
        if not await self._patch(meta["name"], consume_patch(meta["resourceVersion"])):
            return  # claimed by another replica, or written since: the watch brings it again
        outcome = await self._outcome(meta["annotations"], task_id)
        log.info("k8s.decision", cmbtask=meta["name"], task_id=task_id, reason=outcome.reason,
                 message=outcome.message)  # fmt: skip
        body = event_body(obj, outcome, datetime.now(UTC), _INSTANCE)
        try:
            await self._core.create_namespaced_event(self._namespace, cast(Any, body))
        except ApiException as error:
            log.warning("k8s.event_refused", cmbtask=meta["name"], error=str(error.reason))

    async def _outcome(self, annotations: dict[str, str], task_id: str) -> Outcome:
        trust = self._settings.kubernetes_trust_decided_by
        try:
            wanted = read_decision(annotations, trust_decided_by=trust)
        except DecisionError as error:
            return Outcome(DecisionEventReason.REFUSED, str(error))
        if wanted is None:  # unreachable while the caller checks for the annotation
            return Outcome(DecisionEventReason.REFUSED, "no decision")
        return await self._records.decide(task_id, wanted)

    async def _import(self, obj: dict[str, Any]) -> None:
        name, uid, spec = obj["metadata"]["name"], obj["metadata"]["uid"], obj["spec"]
        owner = spec.get("owner") or self._settings.local_user
        try:
            task_id, session_id = await self._records.register(owner, name, uid, spec)
        except Exception as error:  # bad input is the operator's to report on the object
            log.warning("k8s.import_refused", cmbtask=name, error=str(error))
            labels = {LABEL_ORIGIN: "kubectl-refused"}
            await self._patch(name, {"metadata": {"labels": labels}})
            return
        labels = {LABEL_ORIGIN: "kubectl", LABEL_TASK_ID: dns_label(task_id)}
        await self._patch(
            name, {"metadata": {"labels": labels}, "spec": {"taskId": task_id, "sessionId": session_id}}
        )
        log.info("k8s.imported", cmbtask=name, task_id=task_id, session_id=session_id)

    async def _patch(self, name: str, body: dict[str, Any], *, status: bool = False) -> bool:
        call = (
            self._custom.patch_namespaced_custom_object_status
            if status
            else self._custom.patch_namespaced_custom_object
        )
        try:
            await call(CRD_GROUP, CRD_VERSION, self._namespace, CRD_PLURAL, name, body, **_MERGE)
        except ApiException as error:
            if error.status in (404, 409):
                return False
            raise
        return True

    async def _sync(self) -> None:
        while True:
            await asyncio.sleep(_SYNC_EVERY_S)
            try:
                await self._sync_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("k8s.sync_error")

    async def _sync_all(self) -> None:
        wanted = await self._records.wanted_statuses(self._namespace)
        # Tasks that ended before the sync saw their approval decided still show
        # it pending: the approval's own record says how it ended.
        stale = stale_approval_ids(self._seen, set(wanted))
        if stale:
            found = await self._records.approvals_by_id(list(stale.values()))
            wanted |= {name: {"approval": found[a]} for name, a in stale.items() if a in found}
        for name, fields in wanted.items():
            seen = self._seen.get(name)
            change = None if seen is None else status_change(seen.get("status") or {}, fields)
            if change:
                version = seen["metadata"]["resourceVersion"]  # type: ignore[index]
                await self._patch(
                    name, {"metadata": {"resourceVersion": version}, "status": change}, status=True
                )


def _split(handle: str) -> tuple[str, str]:
    namespace, _, name = handle.partition("/")
    if not name:
        raise ExecutorError(f"not a kubernetes handle: {handle!r}")
    return namespace, name
