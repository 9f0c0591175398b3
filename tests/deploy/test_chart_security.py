"""Security properties of the rendered chart, for the default and the
production-like values: who runs as whom, what each container may write and
use, what each service account may do, and where runner pods may connect.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from cmbtask_protocol import LABEL_MANAGED_BY, OPERATOR_NAME

from tests.deploy.charts import Helm, Manifests

#: every (apiGroup, resource) a component may touch, and the verbs allowed on it
ALLOWED_VERBS: dict[str, dict[tuple[str, str], set[str]]] = {
    "gateway": {
        ("cmbtask.io", "cmbtasks"): {"get", "list", "watch", "create", "patch"},
        ("cmbtask.io", "cmbtasks/status"): {"patch"},
        ("", "secrets"): {"create", "patch"},
        ("", "events"): {"create"},
    },
    "operator": {
        ("cmbtask.io", "cmbtasks"): {"get", "list", "watch", "patch", "delete"},
        ("cmbtask.io", "cmbtasks/status"): {"get", "patch"},
        ("", "pods"): {"get", "list", "watch", "create", "delete"},
        ("", "secrets"): {"get"},
        ("", "events"): {"create"},
        ("events.k8s.io", "events"): {"create"},
        ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "create", "patch"},
        ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "create", "patch"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("", "namespaces"): {"list", "watch"},
    },
}
#: what may be granted cluster-wide when the operator serves only some namespaces
CLUSTER_SCOPED_READS = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}


def _pod_specs(manifests: Manifests) -> Iterator[tuple[str, dict[str, Any]]]:
    for workload in manifests.workloads():
        yield workload["metadata"]["name"], workload["spec"]["template"]["spec"]


def _containers(manifests: Manifests) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, pod in _pod_specs(manifests):
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield f"{name}/{container['name']}", container


def _grants(manifests: Manifests) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(component, role kind, rule) for every rule bound to a chart service account."""
    roles = {(r["kind"], r["metadata"]["name"], r["metadata"].get("namespace")): r for r in manifests
             if r["kind"] in {"Role", "ClusterRole"}}  # fmt: skip
    for binding in manifests.of_kind("RoleBinding") + manifests.of_kind("ClusterRoleBinding"):
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], ref["name"], namespace)]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount", subject
            component = subject["name"].rsplit("-", 1)[-1]
            for rule in role["rules"]:
                yield component, ref["kind"], rule


def test_pods_run_as_non_root_with_the_runtime_seccomp_profile(manifests: Manifests) -> None:
    for name, pod in _pod_specs(manifests):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] > 0 and context["runAsGroup"] > 0, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(forbidden), f"{name}: {forbidden}"


def test_containers_cannot_escalate_and_write_only_to_volumes(manifests: Manifests) -> None:
    for name, container in _containers(manifests):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert not context.get("privileged"), name
        mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


def test_every_container_has_requests_and_limits(manifests: Manifests) -> None:
    for name, container in _containers(manifests):
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert set(resources[kind]) >= {"cpu", "memory"}, f"{name}: {kind}"


def test_each_workload_runs_under_its_own_service_account(manifests: Manifests) -> None:
    accounts = {sa["metadata"]["name"] for sa in manifests.of_kind("ServiceAccount")}
    for name, pod in _pod_specs(manifests):
        assert pod["serviceAccountName"] == name and name in accounts, name


def _served_namespaces(manifests: Manifests) -> list[str]:
    """The operator's namespaces; empty when it serves the whole cluster."""
    config = manifests.get("ConfigMap", "rel-cmbtask-operator")["data"]
    served: list[str] = json.loads(config["CMBTASK_OPERATOR_NAMESPACES"])
    return served


def test_rbac_verbs_are_no_wider_than_each_component_needs(manifests: Manifests) -> None:
    cluster_wide = _served_namespaces(manifests) == []
    seen: set[str] = set()
    for component, role_kind, rule in _grants(manifests):
        seen.add(component)
        allowed = ALLOWED_VERBS[component]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert not rule.get("resourceNames") or rule["verbs"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, resource)
                assert key in allowed, f"{component} may not touch {key}"
                extra = set(rule["verbs"]) - allowed[key]
                assert not extra, f"{component}: {sorted(extra)} on {key}"
                if role_kind == "ClusterRole" and not (component == "operator" and cluster_wide):
                    assert key in CLUSTER_SCOPED_READS, f"{component}: {key} granted cluster-wide"
    assert seen == {"gateway", "operator"}


def test_gateway_never_touches_pods(manifests: Manifests) -> None:
    for component, _, rule in _grants(manifests):
        if component == "gateway":
            assert "pods" not in rule["resources"], rule


def test_cluster_wide_operator_uses_one_cluster_role_with_the_same_rules(helm: Helm) -> None:
    rendered = helm.template(sets={"operator.clusterWide": "true", "operator.replicas": "2"})
    assert [r["metadata"]["namespace"] for r in rendered.of_kind("Role")] == ["cmbtask"]  # gateway's
    rules = {
        (group, resource): set(rule["verbs"])
        for component, kind, rule in _grants(rendered)
        if component == "operator" and kind == "ClusterRole"
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules[("", "pods")] == {"get", "list", "watch", "create", "delete"}
    assert rules[("kopf.dev", "clusterkopfpeerings")] == {"get", "list", "watch", "create", "patch"}
    crds = [crd["metadata"]["name"] for crd in rendered.of_kind("CustomResourceDefinition")]
    assert "clusterkopfpeerings.kopf.dev" in crds


def _runner_policies(manifests: Manifests) -> list[dict[str, Any]]:
    return [p for p in manifests.of_kind("NetworkPolicy") if p["metadata"]["name"].endswith("-runner")]


def test_runner_pods_reach_only_the_gateway_and_dns(manifests: Manifests) -> None:
    gateway = manifests.get("Deployment", "rel-cmbtask-gateway")
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    (gateway_port,) = gateway["spec"]["template"]["spec"]["containers"][0]["ports"]
    policies = _runner_policies(manifests)
    # Cluster-wide, runner pods may run anywhere; the release namespace gets the policy.
    expected = _served_namespaces(manifests) or ["cmbtask"]
    assert sorted(p["metadata"]["namespace"] for p in policies) == sorted(expected)
    for policy in policies:
        spec = policy["spec"]
        assert spec["podSelector"] == {"matchLabels": {LABEL_MANAGED_BY: OPERATOR_NAME}}
        assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
        to_gateway, to_dns, *to_llm = spec["egress"]
        (peer,) = to_gateway["to"]
        assert peer["podSelector"]["matchLabels"].items() <= gateway_labels.items()
        assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "cmbtask"}
        assert to_gateway["ports"] == [{"protocol": "TCP", "port": gateway_port["containerPort"]}]
        assert {p["port"] for p in to_dns["ports"]} == {53}
        for rule in to_llm:
            assert all(set(peer) == {"ipBlock"} for peer in rule["to"]), rule


def test_llm_egress_is_limited_to_the_configured_cidrs(production_manifests: Manifests) -> None:
    for policy in _runner_policies(production_manifests):
        *_, to_llm = policy["spec"]["egress"]
        assert to_llm == {
            "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
            "ports": [{"protocol": "TCP", "port": 443}],
        }


def test_default_runner_policy_has_no_egress_beyond_gateway_and_dns(default_manifests: Manifests) -> None:
    (policy,) = _runner_policies(default_manifests)
    assert len(policy["spec"]["egress"]) == 2


def test_runner_policy_can_be_turned_off_for_clusters_without_one(helm: Helm) -> None:
    assert _runner_policies(helm.template(sets={"runner.networkPolicy.enabled": "false"})) == []
