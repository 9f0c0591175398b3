"""``helm install`` into a real API server (the development control plane).

The chart goes in with the production-like values. The API server then says
whether the CRDs register, the RBAC objects apply and mean what the chart
claims (``kubectl auth can-i`` as each service account), and whether the
signing key survives upgrade and uninstall. There is no kubelet and no image:
the gateway and the operator run as local processes configured from the
ConfigMaps and Secret the chart created, authenticated as the chart's service
accounts, with the e2e node agent standing in for the kubelet, so that the
chart's example CmbTask runs end to end under exactly the chart's settings
and permissions. The one substitution: runner pods reach the gateway on
loopback instead of through its cluster DNS name.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.charts import CHART, Helm
from tests.deploy.conftest import PRODUCTION_VALUES
from tests.e2e.cluster import ControlPlane, Kubectl, Process, wait_for
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.k8s

NAMESPACE = "cmbtask"
TASK_NAMESPACE = "cmbtask-tasks"  # the production values' extra watched namespace
RELEASE = "rel"
GATEWAY_SA = f"system:serviceaccount:{NAMESPACE}:rel-cmbtask-gateway"
OPERATOR_SA = f"system:serviceaccount:{NAMESPACE}:rel-cmbtask-operator"
EXAMPLE = CHART / "examples" / "cmbtask-demo.yaml"
SIGNING_KEY = "rel-cmbtask-signing-key"


@dataclass
class Installed:
    plane: ControlPlane
    kubectl: Kubectl
    helm: Helm
    root: Path

    def helm_run(self, *args: str) -> str:
        return self.helm.run("--kubeconfig", self.plane.kubeconfig, *args)

    def signing_key(self) -> str:
        secret = self.kubectl.get("secret", SIGNING_KEY, NAMESPACE)
        assert secret is not None
        return str(secret["data"]["secret-key"])

    def can(self, who: str, verb: str, resource: str, namespace: str) -> bool:
        result = self.kubectl.run("auth", "can-i", verb, resource, "--as", who, "-n", namespace, check=False)
        return result.stdout.strip() == "yes"

    def kubeconfig_for(self, account: str) -> str:
        """A kubeconfig that authenticates as one of the chart's service accounts."""
        token = self.kubectl.run("create", "token", account, "-n", NAMESPACE, "--duration", "1h").stdout
        config = yaml.safe_load(Path(self.plane.kubeconfig).read_text())
        config["users"][0]["user"] = {"token": token.strip()}
        config["contexts"][0]["context"]["namespace"] = NAMESPACE
        path = self.root / f"{account}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return str(path)

    def config_map(self, name: str) -> dict[str, str]:
        found = self.kubectl.get("configmap", name, NAMESPACE)
        assert found is not None, name
        return dict(found["data"])


@pytest.fixture(scope="module")
def installed(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("helm-install")
    plane = ControlPlane.start(root / "control-plane")
    try:
        kubectl = plane.kubectl()
        for namespace in (NAMESPACE, TASK_NAMESPACE):
            kubectl.run("create", "namespace", namespace)
        world = Installed(plane, kubectl, helm, root)
        world.helm_run(
            "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", str(PRODUCTION_VALUES),
            "--timeout", "120s",
        )  # fmt: skip
        yield world
    finally:
        plane.stop()


def test_crds_register_and_the_api_server_enforces_the_schema(installed: Installed) -> None:
    kubectl = installed.kubectl
    kubectl.run("wait", "--for", "condition=established", "--timeout=60s",
                "crd/cmbtasks.cmbtask.io", "crd/kopfpeerings.kopf.dev")  # fmt: skip
    kubectl.run("apply", "--dry-run=server", "-n", NAMESPACE, "-f", str(EXAMPLE))
    bad = yaml.safe_load(EXAMPLE.read_text())
    bad["spec"]["engine"] = "Not An Engine!"
    refused = kubectl.run("apply", "--dry-run=server", "-f", "-", "-n", NAMESPACE,
                          stdin=yaml.safe_dump(bad), check=False)  # fmt: skip
    assert refused.returncode != 0 and "spec.engine" in refused.stderr


@pytest.mark.parametrize(
    ("who", "verb", "resource", "namespace", "allowed"),
    [
        (OPERATOR_SA, "create", "pods", NAMESPACE, True),
        (OPERATOR_SA, "delete", "pods", TASK_NAMESPACE, True),
        (OPERATOR_SA, "patch", "cmbtasks.cmbtask.io/status", TASK_NAMESPACE, True),
        (OPERATOR_SA, "get", "secrets", NAMESPACE, True),
        (OPERATOR_SA, "list", "secrets", NAMESPACE, False),
        (OPERATOR_SA, "create", "pods", "default", False),
        (OPERATOR_SA, "update", "cmbtasks.cmbtask.io", NAMESPACE, False),
        (OPERATOR_SA, "patch", "kopfpeerings.kopf.dev", TASK_NAMESPACE, True),
        (OPERATOR_SA, "create", "kopfpeerings.kopf.dev", NAMESPACE, True),
        (GATEWAY_SA, "create", "cmbtasks.cmbtask.io", NAMESPACE, True),
        (GATEWAY_SA, "create", "secrets", NAMESPACE, True),
        (GATEWAY_SA, "get", "secrets", NAMESPACE, False),
        (GATEWAY_SA, "create", "pods", NAMESPACE, False),
        (GATEWAY_SA, "create", "cmbtasks.cmbtask.io", TASK_NAMESPACE, False),
        (GATEWAY_SA, "delete", "cmbtasks.cmbtask.io", NAMESPACE, False),
    ],
)
def test_rbac_grants_what_each_component_needs_and_no_more(
    installed: Installed, who: str, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    assert installed.can(who, verb, resource, namespace) is allowed


def test_example_cmbtask_runs_end_to_end_under_the_charts_settings(installed: Installed) -> None:
    gateway_env = installed.config_map("rel-cmbtask-gateway")
    operator_env = installed.config_map("rel-cmbtask-operator")
    key = base64.b64decode(installed.signing_key()).decode()
    data = installed.root / "gateway"
    database = f"sqlite+aiosqlite:///{data / 'cmbtask.db'}"
    # Local stand-ins own these: host, port and data dir come from `cmbtask up`.
    local = {"CMBTASK_HOST", "CMBTASK_PORT", "CMBTASK_DATA_DIR", "CMBTASK_PUBLIC_URL"}
    env = {k: v for k, v in gateway_env.items() if k not in local}
    env |= {"CMBTASK_SECRET_KEY": key, "KUBECONFIG": installed.kubeconfig_for("rel-cmbtask-gateway")}
    _migrate(data, database, env)  # what the chart's init container runs
    gateway = GatewayProcess(data, database, **env)
    agent = Process(
        "node-agent",
        ["-m", "tests.e2e.node_agent", "--root", str(installed.root / "pods"),
         "--images", operator_env["CMBTASK_OPERATOR_IMAGE"]],
        {"KUBECONFIG": installed.plane.kubeconfig},
        installed.root,
    )  # fmt: skip
    operator = Process(
        "operator",
        ["-m", "cmbtask_operator"],
        {**operator_env, "KUBECONFIG": installed.kubeconfig_for("rel-cmbtask-operator")},
        installed.root,
    )
    started: list[Any] = []
    try:
        started.append(gateway.start())
        operator.env["CMBTASK_OPERATOR_GATEWAY_URL"] = gateway.url
        started += [agent.start(), operator.start()]
        # Two replicas in the values: the operator makes its peering objects itself.
        for namespace in (NAMESPACE, TASK_NAMESPACE):
            peering = functools.partial(installed.kubectl.get, "kopfpeering", "cmbtask", namespace)
            wait_for(peering, 60, f"the operator's peering object in {namespace}")
        installed.kubectl.run("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
        status = _wait_finished(installed.kubectl, "cmbtask-demo")
        assert status["phase"] == "succeeded", (status, operator.log()[-3000:])
        pod = installed.kubectl.get("pod", "cmbtask-demo-runner", NAMESPACE)
        assert pod is not None
        runner = yaml.safe_load(PRODUCTION_VALUES.read_text())["runner"]
        assert pod["spec"]["nodeSelector"] == runner["nodeSelector"]
        assert [t["key"] for t in pod["spec"]["tolerations"]][:1] == [runner["tolerations"][0]["key"]]
        (container,) = pod["spec"]["containers"]
        assert container["resources"] == runner["resources"]
        _assert_gateway_saw_it(gateway, gateway_env["CMBTASK_PROXY_USER_HEADER"])
    finally:
        for process in reversed(started):
            process.stop()
    # kopf and the executor log refused API calls; the chart's RBAC must cause none.
    for log in (operator.log(), gateway.log_path.read_text(errors="replace")):
        assert "Forbidden" not in log and "Not enough permissions" not in log, log[-3000:]


def test_upgrade_and_uninstall_keep_the_signing_key_and_the_crd(installed: Installed) -> None:
    before = installed.signing_key()
    installed.helm_run(
        "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", str(PRODUCTION_VALUES),
        "--set", "gateway.maxConcurrentTasks=50",
    )  # fmt: skip
    assert installed.config_map("rel-cmbtask-gateway")["CMBTASK_MAX_CONCURRENT_TASKS"] == "50"
    assert installed.signing_key() == before
    installed.helm_run("uninstall", RELEASE, "--namespace", NAMESPACE)
    assert installed.kubectl.get("configmap", "rel-cmbtask-gateway", NAMESPACE) is None
    assert installed.signing_key() == before
    crd = installed.kubectl.run("get", "crd", "cmbtasks.cmbtask.io", "-o", "json").stdout
    assert json.loads(crd)["metadata"]["name"] == "cmbtasks.cmbtask.io"


# ---- helpers ---------------------------------------------------------------------


def _migrate(data: Path, database: str, env: dict[str, str]) -> None:
    data.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "cmbtask_gateway.cli", "db", "upgrade", "--data-dir", str(data)],
        env={**os.environ, **env, "CMBTASK_DATABASE_URL": database},
        check=True,
        capture_output=True,
        timeout=120,
    )


def _wait_finished(kubectl: Kubectl, name: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        found = kubectl.get("cmbtask", name, NAMESPACE) or {}
        status: dict[str, Any] = found.get("status") or {}
        return status if status.get("phase") in {"succeeded", "failed", "cancelled", "timed_out"} else None

    return wait_for(finished, 180, f"CmbTask {name} to finish", interval_s=0.5)


def _assert_gateway_saw_it(gateway: GatewayProcess, user_header: str) -> None:
    with httpx.Client(base_url=gateway.url, headers={user_header: "local"}, timeout=30) as http:
        sessions = http.get("/api/sessions").json()["items"]
        assert sessions, "the gateway imported no session for the CmbTask"
        events = http.get(f"/api/sessions/{sessions[0]['id']}/events", params={"after": 0}).json()["items"]
        types = [event["type"] for event in events]
        assert types[0] == "task.queued" and types[-1] == "task.succeeded", types
        assert types.count("step.completed") == 3
