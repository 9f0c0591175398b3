"""kopf's peering resources, which keep two operator replicas from both acting.

Replicas announce themselves with a priority in a ``(Cluster)KopfPeering``
object; all but the highest pause. The CRDs and the object must exist before
the operator starts (peering is mandatory unless ``standalone``), so tests
and the chart create them from here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["peering_crds", "peering_object"]

_GROUP = "kopf.dev"


def _crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{_GROUP}"},
        "spec": {
            "scope": scope,
            "group": _GROUP,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }


def peering_crds() -> list[dict[str, Any]]:
    return [
        _crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        _crd("KopfPeering", "kopfpeerings", "Namespaced"),
    ]


def peering_object(name: str, namespace: str | None = None) -> dict[str, Any]:
    """The peering object: cluster-wide when ``namespace`` is None."""
    if namespace is None:
        return {"apiVersion": f"{_GROUP}/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    return {
        "apiVersion": f"{_GROUP}/v1",
        "kind": "KopfPeering",
        "metadata": {"name": name, "namespace": namespace},
    }
