"""The Helm chart: lint, render, validate offline, and the properties that
matter once it runs (migrations first, probes, secrets, peering, settings).

Security properties of the rendered objects are in ``test_chart_security``.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from cmbtask_gateway.settings import Settings
from cmbtask_operator.peering import peering_crds
from cmbtask_operator.settings import OperatorSettings
from cmbtask_protocol import CRD_NAME, CmbTaskSpec
from jsonschema import Draft7Validator  # type: ignore[import-untyped]

from tests.deploy.charts import CHART, Helm, Manifests
from tests.deploy.conftest import PRODUCTION_VALUES

GATEWAY = "rel-cmbtask-gateway"
OPERATOR = "rel-cmbtask-operator"
#: the oldest Kubernetes the chart declares, and the newest the schemas know
KUBE_VERSIONS = ("1.27.0", "1.37.0")
EXAMPLE = CHART / "examples" / "cmbtask-demo.yaml"


def _env(container: dict[str, Any], manifests: Manifests) -> dict[str, Any]:
    """A container's environment: its ConfigMaps' data, then its own entries."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(manifests.get("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def _pod(manifests: Manifests, deployment: str) -> dict[str, Any]:
    spec: dict[str, Any] = manifests.get("Deployment", deployment)["spec"]["template"]
    return spec


def _structural_to_json_schema(node: Any) -> Any:
    """A CRD's OpenAPI v3 schema as JSON Schema: ``nullable`` becomes a null
    type, Kubernetes extensions go."""
    if isinstance(node, list):
        return [_structural_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _structural_to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _crd_validator(crd: dict[str, Any]) -> Draft7Validator:
    (version,) = crd["spec"]["versions"]
    return Draft7Validator(_structural_to_json_schema(version["schema"]["openAPIV3Schema"]))


# ---- lint and offline validation ------------------------------------------------


@pytest.mark.parametrize("values", [None, PRODUCTION_VALUES], ids=["default", "production"])
def test_helm_lint_strict_passes(helm: Helm, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    output = helm.run(*args)
    assert "1 chart(s) linted, 0 chart(s) failed" in output


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_object_validates_against_kubernetes_schemas(
    manifests: Manifests, kube_version: str
) -> None:
    custom = {crd["spec"]["names"]["kind"]: crd for crd in manifests.of_kind("CustomResourceDefinition")}
    for doc in manifests:
        if doc["kind"] in custom:
            errors = [e.message for e in _crd_validator(custom[doc["kind"]]).iter_errors(doc)]
            assert errors == [], f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
            continue
        kubernetes_validate.validate(doc, kube_version, strict=True)


def test_production_values_render_what_production_needs(production_manifests: Manifests) -> None:
    assert production_manifests.get("Deployment", GATEWAY)["spec"]["replicas"] == 2
    assert production_manifests.get("Deployment", OPERATOR)["spec"]["replicas"] == 2
    ingress = production_manifests.get("Ingress", GATEWAY)
    assert ingress["spec"]["tls"][0]["secretName"] == "cmbtask-tls"
    env = _env(_pod(production_manifests, GATEWAY)["spec"]["containers"][0], production_manifests)
    assert env["CMBTASK_DATABASE_URL"] == {"secretKeyRef": {"name": "cmbtask-postgres", "key": "url"}}
    assert production_manifests.of_kind("PersistentVolumeClaim") == []


def test_values_schema_refuses_mistakes(helm: Helm) -> None:
    for bad in ("gateway.replicaz=2", "database.url=mysql://db/x", "auth.mode=open", "gateway.replicas=0"):
        result = helm.attempt("template", "rel", str(CHART), "--set", bad)
        assert result.returncode != 0, bad
        assert "schema" in result.stderr, result.stderr


def test_several_gateways_on_sqlite_are_refused(helm: Helm) -> None:
    result = helm.attempt("template", "rel", str(CHART), "--set", "gateway.replicas=2")
    assert result.returncode != 0
    assert "needs PostgreSQL" in result.stderr


# ---- CRDs -------------------------------------------------------------------------------


def test_crd_is_the_generated_file_and_survives_uninstall(default_manifests: Manifests) -> None:
    generated = yaml.safe_load((CHART / "files" / "cmbtasks.crd.yaml").read_text())
    rendered = default_manifests.get("CustomResourceDefinition", CRD_NAME)
    assert rendered["spec"] == generated["spec"]
    assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_peering_crds_are_the_ones_the_operator_expects() -> None:
    shipped = {
        crd["metadata"]["name"]: crd["spec"]
        for crd in (
            yaml.safe_load(path.read_text()) for path in (CHART / "files").glob("*kopfpeerings.crd.yaml")
        )
    }
    assert shipped == {crd["metadata"]["name"]: crd["spec"] for crd in peering_crds()}


def test_crds_install_false_renders_no_crd(helm: Helm) -> None:
    assert helm.template(sets={"crds.install": "false"}).of_kind("CustomResourceDefinition") == []


def test_example_cmbtask_is_valid_for_the_crd_and_the_protocol(default_manifests: Manifests) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    crd = default_manifests.get("CustomResourceDefinition", CRD_NAME)
    assert [e.message for e in _crd_validator(crd).iter_errors(example)] == []
    spec = CmbTaskSpec.model_validate(example["spec"])
    assert spec.engine == "demo"


# ---- gateway ----------------------------------------------------------------------


def test_gateway_migrates_before_it_serves(manifests: Manifests) -> None:
    pod = _pod(manifests, GATEWAY)["spec"]
    (migrate,) = pod["initContainers"]
    (gateway,) = pod["containers"]
    assert migrate["args"] == ["db", "upgrade"] and migrate["image"] == gateway["image"]
    # The same database, key and data directory as the gateway it prepares.
    assert _env(migrate, manifests) == _env(gateway, manifests)
    assert _env(gateway, manifests)["CMBTASK_AUTO_MIGRATE"] == "false"
    assert migrate["volumeMounts"] == gateway["volumeMounts"]


def test_gateway_probes_use_healthz_and_readyz_on_its_port(manifests: Manifests) -> None:
    (gateway,) = _pod(manifests, GATEWAY)["spec"]["containers"]
    (port,) = gateway["ports"]
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert str(port["containerPort"]) == _env(gateway, manifests)["CMBTASK_PORT"]
    service = manifests.get("Service", GATEWAY)
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_gateway_settings_are_names_the_gateway_reads(manifests: Manifests) -> None:
    (gateway,) = _pod(manifests, GATEWAY)["spec"]["containers"]
    known = {f"CMBTASK_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(set(_env(gateway, manifests)) - known)
    assert unknown == [], f"the gateway has no setting for {unknown}"
    env = _env(gateway, manifests)
    assert env["CMBTASK_EXECUTOR"] == "kubernetes"
    assert env["CMBTASK_PUBLIC_URL"] == f"http://{GATEWAY}.cmbtask.svc.cluster.local:80"


def test_gateway_signing_key_is_generated_once_and_kept(default_manifests: Manifests) -> None:
    secret = default_manifests.get("Secret", "rel-cmbtask-signing-key")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(base64.b64decode(secret["data"]["secret-key"])) == 64
    (gateway,) = _pod(default_manifests, GATEWAY)["spec"]["containers"]
    assert _env(gateway, default_manifests)["CMBTASK_SECRET_KEY"] == {
        "secretKeyRef": {"name": "rel-cmbtask-signing-key", "key": "secret-key"}
    }


def test_existing_signing_key_secret_replaces_the_generated_one(helm: Helm) -> None:
    rendered = helm.template(sets={"auth.existingSecret": "my-key"})
    assert [s["metadata"]["name"] for s in rendered.of_kind("Secret")] == []
    (gateway,) = _pod(rendered, GATEWAY)["spec"]["containers"]
    assert _env(gateway, rendered)["CMBTASK_SECRET_KEY"]["secretKeyRef"]["name"] == "my-key"


def test_sqlite_default_keeps_one_gateway_on_a_kept_volume(default_manifests: Manifests) -> None:
    deployment = default_manifests.get("Deployment", GATEWAY)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    claim = default_manifests.get("PersistentVolumeClaim", "rel-cmbtask-gateway-data")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_database_url_from_values_goes_into_a_secret(helm: Helm) -> None:
    url = "postgresql+asyncpg://cmbtask:pw@db:5432/cmbtask"
    rendered = helm.template(sets={"database.url": url, "gateway.replicas": "3"})
    secret = rendered.get("Secret", "rel-cmbtask-database")
    assert secret["stringData"] == {"database-url": url}
    assert url not in json.dumps(rendered.of_kind("ConfigMap") + rendered.of_kind("Deployment"))
    assert rendered.get("Deployment", GATEWAY)["spec"]["strategy"]["type"] == "RollingUpdate"


def test_config_change_rolls_the_pods_through_a_checksum(helm: Helm, default_manifests: Manifests) -> None:
    changed = helm.template(sets={"gateway.maxConcurrentTasks": "99", "runner.workDirSizeLimit": "5Gi"})
    for deployment in (GATEWAY, OPERATOR):
        before = _pod(default_manifests, deployment)["metadata"]["annotations"]["checksum/config"]
        after = _pod(changed, deployment)["metadata"]["annotations"]["checksum/config"]
        assert re.fullmatch(r"[0-9a-f]{64}", before) and before != after, deployment


def test_ingress_routes_everything_to_the_gateway_service(production_manifests: Manifests) -> None:
    ingress = production_manifests.get("Ingress", GATEWAY)
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert rule["host"] == "cmbtask.example.org" and path["path"] == "/"
    assert path["backend"]["service"] == {"name": GATEWAY, "port": {"name": "http"}}


def test_gateway_disruption_budget_selects_the_gateway_pods(manifests: Manifests) -> None:
    budget = manifests.get("PodDisruptionBudget", GATEWAY)
    labels = _pod(manifests, GATEWAY)["metadata"]["labels"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


# ---- operator -------------------------------------------------------------------------


def test_single_operator_runs_standalone_without_peering(default_manifests: Manifests) -> None:
    (operator,) = _pod(default_manifests, OPERATOR)["spec"]["containers"]
    assert _env(operator, default_manifests)["CMBTASK_OPERATOR_STANDALONE"] == "true"
    assert default_manifests.of_kind("KopfPeering") == []
    assert default_manifests.get("Deployment", OPERATOR)["spec"]["strategy"]["type"] == "Recreate"
    crds = [crd["metadata"]["name"] for crd in default_manifests.of_kind("CustomResourceDefinition")]
    assert crds == [CRD_NAME]


def test_operator_replicas_elect_a_leader_through_kopf_peering(production_manifests: Manifests) -> None:
    (operator,) = _pod(production_manifests, OPERATOR)["spec"]["containers"]
    env = _env(operator, production_manifests)
    assert env["CMBTASK_OPERATOR_STANDALONE"] == "false"
    namespaces = json.loads(env["CMBTASK_OPERATOR_NAMESPACES"])
    assert namespaces == ["cmbtask", "cmbtask-tasks"]
    assert production_manifests.get("CustomResourceDefinition", "kopfpeerings.kopf.dev")
    # The operator creates its peering object in every served namespace when missing.
    for namespace in namespaces:
        rules = production_manifests.get("Role", OPERATOR, namespace)["rules"]
        (peering,) = [rule for rule in rules if rule["apiGroups"] == ["kopf.dev"]]
        assert peering["resources"] == ["kopfpeerings"] and {"create", "patch"} <= set(peering["verbs"])


def test_operator_liveness_probe_asks_kopf(manifests: Manifests) -> None:
    (operator,) = _pod(manifests, OPERATOR)["spec"]["containers"]
    (port,) = operator["ports"]
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    endpoint = _env(operator, manifests)["CMBTASK_OPERATOR_LIVENESS_ENDPOINT"]
    assert endpoint == f"http://0.0.0.0:{port['containerPort']}/healthz"


def test_runner_pod_defaults_reach_the_operator(production_manifests: Manifests) -> None:
    values = yaml.safe_load(PRODUCTION_VALUES.read_text())["runner"]
    (operator,) = _pod(production_manifests, OPERATOR)["spec"]["containers"]
    env = _env(operator, production_manifests)
    assert env["CMBTASK_OPERATOR_IMAGE"] == "registry.example.org/cmbtask/runner:0.1.0-cmbagent"
    assert env["CMBTASK_OPERATOR_CPU_LIMIT"] == values["resources"]["limits"]["cpu"]
    assert env["CMBTASK_OPERATOR_MEMORY_REQUEST"] == values["resources"]["requests"]["memory"]
    assert json.loads(env["CMBTASK_OPERATOR_NODE_SELECTOR"]) == values["nodeSelector"]
    assert json.loads(env["CMBTASK_OPERATOR_TOLERATIONS"]) == values["tolerations"]
    assert env["CMBTASK_OPERATOR_GATEWAY_URL"] == f"http://{GATEWAY}.cmbtask.svc.cluster.local:80"


def test_operator_settings_are_names_the_operator_reads(manifests: Manifests) -> None:
    (operator,) = _pod(manifests, OPERATOR)["spec"]["containers"]
    known = {f"CMBTASK_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    unknown = sorted(set(_env(operator, manifests)) - known)
    assert unknown == [], f"the operator has no setting for {unknown}"


# ---- NOTES -------------------------------------------------------------------------------


def test_notes_explain_opening_the_ui_and_applying_the_example(helm: Helm, tmp_path: Path) -> None:
    # helm renders NOTES.txt only on install; render a copy as a template instead.
    copy = tmp_path / "cmbtask"
    shutil.copytree(CHART, copy)
    shutil.copy(copy / "templates" / "NOTES.txt", copy / "templates" / "notes-as-manifest.yaml")
    result = helm.attempt(
        "template", "rel", str(copy), "-n", "cmbtask", "--show-only", "templates/notes-as-manifest.yaml",
        "--debug",
    )  # fmt: skip
    notes = result.stdout.split("# Source: cmbtask/templates/notes-as-manifest.yaml", 1)[1]
    assert f"port-forward service/{GATEWAY} 8080:80" in notes
    assert "cmbtask token create" in notes
    applied = notes.split("apply -f - <<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0]
    assert yaml.safe_load(applied) == yaml.safe_load(EXAMPLE.read_text())


# ---- kubectl decisions ------------------------------------------------------------

POLICY_KINDS = {
    "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
}  # fmt: skip
MAP_API = "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy"


def _trusts_decided_by(manifests: Manifests) -> str:
    return str(manifests.get("ConfigMap", GATEWAY)["data"]["CMBTASK_KUBERNETES_TRUST_DECIDED_BY"])


def test_decision_policies_follow_the_api_server_and_the_gateway_trusts_only_them(helm: Helm) -> None:
    # auto, offline: helm knows of no MutatingAdmissionPolicy API, so none, and no trust
    plain = helm.template()
    assert [d for d in plain if d["kind"] in POLICY_KINDS] == [] and _trusts_decided_by(plain) == "false"
    offered = helm.template(extra=("--api-versions", MAP_API))
    assert {d["kind"] for d in offered if d["kind"] in POLICY_KINDS} == POLICY_KINDS
    assert _trusts_decided_by(offered) == "true"
    off = helm.template(
        sets={"gateway.kubectlDecisions.admissionPolicies": "false"}, extra=("--api-versions", MAP_API)
    )
    assert [d for d in off if d["kind"] in POLICY_KINDS] == [] and _trusts_decided_by(off) == "false"


def test_decision_policies_stamp_the_requesting_user_in_the_release_namespace_only(helm: Helm) -> None:
    rendered = helm.template(sets={"gateway.kubectlDecisions.admissionPolicies": "true"}, namespace="team-a")
    policies = [d for d in rendered if d["kind"] in POLICY_KINDS]
    assert len(policies) == 4
    for doc in policies:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
        assert doc["metadata"]["name"].startswith("team-a-")  # cluster-scoped: one per release namespace
    [mutating] = rendered.of_kind("MutatingAdmissionPolicy")
    [mutation] = mutating["spec"]["mutations"]
    assert "request.userInfo.username" in mutation["jsonPatch"]["expression"]
    assert mutating["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["cmbtasks"]
    for binding in rendered.of_kind("MutatingAdmissionPolicyBinding") + rendered.of_kind(
        "ValidatingAdmissionPolicyBinding"
    ):
        selector = binding["spec"]["matchResources"]["namespaceSelector"]
        assert selector == {"matchLabels": {"kubernetes.io/metadata.name": "team-a"}}
    [validating] = rendered.of_kind("ValidatingAdmissionPolicyBinding")
    assert validating["spec"]["validationActions"] == ["Deny"]
