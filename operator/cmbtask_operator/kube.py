"""The few Kubernetes API calls the operator makes, with their races handled.

kopf watches and patches the CmbTask it is handling; everything else (pods,
Secrets, the status of another CmbTask) goes through kubernetes_asyncio here.
Every write is idempotent: a 409 on create means the pod is already there,
a 404 on delete means it is already gone.
"""

from __future__ import annotations

from typing import Any, cast

from cmbtask_protocol import CRD_GROUP, CRD_PLURAL, CRD_VERSION
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from .peering import peering_object

__all__ = ["Kube", "connect"]

# CRDs take no strategic merge patch; say which patch this is.
_MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}


async def connect() -> client.ApiClient:
    """In a pod: its service account; elsewhere: ``$KUBECONFIG``."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except ConfigException:
        await config.load_kube_config()
    return client.ApiClient()


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def create_pod(self, namespace: str, pod: dict[str, Any]) -> bool:
        """Create ``pod``; False when a pod of that name already exists."""
        try:
            await self.core.create_namespaced_pod(namespace, cast(Any, pod))
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def delete_pod(self, namespace: str, name: str, grace_s: int | None = None) -> bool:
        try:
            await self.core.delete_namespaced_pod(name, namespace, **_grace(grace_s))
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def pod_exists(self, namespace: str, name: str) -> bool:
        try:
            await self.core.read_namespaced_pod(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def secret_exists(self, namespace: str, name: str) -> bool:
        try:
            await self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def get_cmbtask(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = await self.custom.get_namespaced_custom_object(
                CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(found)

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None = None
    ) -> bool:
        """Merge-patch a CmbTask's status. With ``resource_version`` the write
        applies only to that version: False on a conflict, and when it is gone."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            await self.custom.patch_namespaced_custom_object_status(
                CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL, name, body, **_MERGE_PATCH
            )
        except ApiException as error:
            if error.status in (404, 409):
                return False
            raise
        return True

    async def list_cmbtasks(self, namespaces: list[str]) -> list[dict[str, Any]]:
        """Every CmbTask, cluster-wide or in ``namespaces``."""
        if not namespaces:
            found = await self.custom.list_cluster_custom_object(CRD_GROUP, CRD_VERSION, CRD_PLURAL)
            return list(found["items"])
        items: list[dict[str, Any]] = []
        for namespace in namespaces:
            found = await self.custom.list_namespaced_custom_object(
                CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL
            )
            items += found["items"]
        return items

    async def delete_cmbtask(self, namespace: str, name: str) -> bool:
        try:
            await self.custom.delete_namespaced_custom_object(
                CRD_GROUP, CRD_VERSION, namespace, CRD_PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def ensure_peering(self, name: str, namespace: str | None) -> bool:
        """Create kopf's peering object if it is missing; False when that cannot be done here."""
        body = peering_object(name, namespace)
        plural = "kopfpeerings" if namespace else "clusterkopfpeerings"
        try:
            if namespace:
                await self.custom.create_namespaced_custom_object("kopf.dev", "v1", namespace, plural, body)
            else:
                await self.custom.create_cluster_custom_object("kopf.dev", "v1", plural, body)
        except ApiException as error:
            if error.status == 409:
                return True
            if error.status in (403, 404):  # not allowed to, or no CRD: someone else's job
                return False
            raise
        return True

    async def close(self) -> None:
        await self.api.close()


def _grace(grace_s: int | None) -> dict[str, Any]:
    return {} if grace_s is None else {"grace_period_seconds": grace_s}
