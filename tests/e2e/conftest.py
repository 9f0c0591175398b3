"""Fixtures for the Kubernetes end-to-end suite (marker ``k8s``).

The session's cluster (``tests/conftest.py``: a control plane and one real
node) with the CmbTask CRD and kopf's peering CRDs, a gateway using the
kubernetes executor and the real operator, both as host processes; every
runner is a real pod of the runner image built from the Dockerfile.

Start the cluster first (``eval "$(bash scripts/control-plane.sh start
DIR)"``): a cold build of its binaries and images takes longer than one test may.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cmbtask_operator.peering import peering_crds, peering_object

from tests.deploy.charts import Helm, locate_helm
from tests.e2e.cluster import (
    CRD_FILE,
    NODE_IP,
    RUNNER_IMAGE,
    ControlPlane,
    Kubectl,
    Process,
    cmbtask,
    wait_for,
)
from tests.support.gateway import GatewayProcess

PEERING = "cmbtask-e2e"
GATEWAY_NAMESPACE = "cmbtask-gateway"
POLICIES_TEMPLATE = "templates/gateway/decision-policies.yaml"


@pytest.fixture(scope="session")
def control_plane(control_plane: ControlPlane) -> ControlPlane:
    kubectl = control_plane.kubectl()
    kubectl.run("apply", "-f", str(CRD_FILE))
    kubectl.apply(*peering_crds())
    kubectl.run("wait", "--for", "condition=established", "--timeout=60s",
                "crd/cmbtasks.cmbtask.io", "crd/clusterkopfpeerings.kopf.dev")  # fmt: skip
    kubectl.apply(peering_object(PEERING))
    kubectl.run("create", "namespace", GATEWAY_NAMESPACE, check=False)
    _decision_policies(kubectl)
    return control_plane


def _decision_policies(kubectl: Kubectl) -> None:
    """The chart's own admission policies for kubectl decisions, bound to the
    gateway's namespace; ready once a server-side dry run shows the stamp."""
    helm = Helm(locate_helm())
    sets = {"gateway.kubectlDecisions.admissionPolicies": "true"}
    policies = helm.template(sets=sets, namespace=GATEWAY_NAMESPACE, extra=("--show-only", POLICIES_TEMPLATE))
    kubectl.apply(*policies)
    probe = cmbtask("policy-probe", engine="demo")
    probe["metadata"]["annotations"] = {"cmbtask.io/decision": "approve"}

    def stamped() -> bool:
        out = kubectl.apply(
            probe, namespace=GATEWAY_NAMESPACE, extra=("--dry-run=server", "-o", "json"), check=False
        )
        if out.returncode != 0:
            # the API server loads each policy on its own: the validating one
            # may refuse the probe before the mutating one stamps it
            if "denied request" in out.stderr:
                return False
            raise AssertionError(f"the policy probe failed: {out.stderr}")
        return "cmbtask.io/decided-by" in json.loads(out.stdout)["metadata"].get("annotations", {})

    wait_for(stamped, 30, "the decided-by policy to take effect", interval_s=0.5)


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return control_plane.kubectl()


@pytest.fixture(scope="session")
def gateway(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("gateway")
    process = GatewayProcess(
        data,
        f"sqlite+aiosqlite:///{data / 'cmbtask.db'}",
        CMBTASK_EXECUTOR="kubernetes",
        CMBTASK_KUBERNETES_NAMESPACE=GATEWAY_NAMESPACE,
        CMBTASK_KUBERNETES_RUNNER_IMAGE=RUNNER_IMAGE,
        KUBECONFIG=control_plane.kubeconfig,
        host=NODE_IP,
    ).start()
    yield process
    process.stop()


def operator_process(
    plane: ControlPlane, gateway: GatewayProcess, log_dir: Path, name: str = "operator"
) -> Process:
    env = {
        "KUBECONFIG": plane.kubeconfig,
        "CMBTASK_OPERATOR_GATEWAY_URL": gateway.url,
        "CMBTASK_OPERATOR_IMAGE": RUNNER_IMAGE,
        "CMBTASK_OPERATOR_PEERING_NAME": PEERING,
        "CMBTASK_OPERATOR_SECRET_WAIT_S": "30",
        "CMBTASK_OPERATOR_TTL_CHECK_INTERVAL_S": "1",
        "CMBTASK_OPERATOR_POD_GRACE_S": "5",
        "CMBTASK_OPERATOR_DEADLINE_GRACE_S": "1",
        "CMBTASK_OPERATOR_ENGINES": '["demo", "script"]',
    }
    return Process(name, ["-m", "cmbtask_operator"], env, log_dir)


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Process]:
    process = operator_process(control_plane, gateway, tmp_path_factory.mktemp("operator")).start()
    yield process
    process.stop()


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    wait_for(lambda: kubectl.get("serviceaccount", "default", name), 30, "the default ServiceAccount")
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)
