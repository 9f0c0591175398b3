"""``helm install`` on the development cluster: a real API server and one real node.

The chart goes in with the production-like values and the few changes a
one-node test cluster needs (``node-values.yaml``). The API server says
whether the CRDs register and the RBAC objects mean what the chart claims
(``kubectl auth can-i`` as each service account); the node runs the gateway
and the operator as pods of the images built from the Dockerfile, and every
task in a runner pod of the runner image. Clients reach the gateway through
its Service, as anything in a cluster would.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cmbtask_protocol import cmbtask_name_for_task

from tests.deploy.charts import CHART, Helm
from tests.deploy.conftest import PRODUCTION_VALUES
from tests.e2e.cluster import GATEWAY_IMAGE, OPERATOR_IMAGE, RUNNER_IMAGE, ControlPlane, Kubectl, wait_for
from tests.support.clients import SessionClient

pytestmark = pytest.mark.k8s

NAMESPACE = "cmbtask"
TASK_NAMESPACE = "cmbtask-tasks"  # the production values' extra watched namespace
RELEASE = "rel"
GATEWAY_SA = f"system:serviceaccount:{NAMESPACE}:rel-cmbtask-gateway"
OPERATOR_SA = f"system:serviceaccount:{NAMESPACE}:rel-cmbtask-operator"
EXAMPLE = CHART / "examples" / "cmbtask-demo.yaml"
SIGNING_KEY = "rel-cmbtask-signing-key"
NODE_VALUES = Path(__file__).with_name("node-values.yaml")
NODE = "cmbtask-node"
FINAL = {"task.succeeded", "task.failed", "task.cancelled", "task.timed_out"}
FINAL_PHASES = {"succeeded", "failed", "cancelled", "timed_out"}
GATEWAY_SELECTOR = "app.kubernetes.io/instance=rel,app.kubernetes.io/component=gateway"
OPERATOR_SELECTOR = "app.kubernetes.io/instance=rel,app.kubernetes.io/component=operator"
OPERATOR_HEALTH_PORT = 8080  # the chart's default operator.healthPort
# run in a pod: TCP connects to host:port, each "open", "refused" (rejected) or "silent" (timed out)
PROBE = """
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        out[target] = "open"
    except ConnectionRefusedError:
        out[target] = "refused"
    except OSError:
        out[target] = "silent"
print(json.dumps(out))
"""


def _node_values() -> dict[str, Any]:
    return dict(yaml.safe_load(NODE_VALUES.read_text()))


SERVICE_URL = _node_values()["gateway"]["publicUrl"]


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

    def config_map(self, name: str) -> dict[str, str]:
        found = self.kubectl.get("configmap", name, NAMESPACE)
        assert found is not None, name
        return dict(found["data"])

    def token(self, user: str) -> str:
        """A user's API token, made inside the gateway pod as an operator of the cluster would."""
        out = self.kubectl.run("exec", "-n", NAMESPACE, "deploy/rel-cmbtask-gateway", "-c", "gateway", "--",
                               "cmbtask", "token", "create", user).stdout  # fmt: skip
        return out.strip().splitlines()[-1]

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=SERVICE_URL, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def pods(self, selector: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        return self.kubectl.items("pods", namespace, selector)


@pytest.fixture(scope="module")
def installed(
    helm: Helm, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("helm-install")
    kubectl = control_plane.kubectl()
    _release_unowned_crds(kubectl)
    for namespace in (NAMESPACE, TASK_NAMESPACE):
        kubectl.run("create", "namespace", namespace)
    # the production values put runners on nodes labelled for them
    kubectl.run("label", "node", NODE, "cmbtask.io/runner=true", "--overwrite")
    _static_volume(kubectl, root / "gateway-data")
    world = Installed(control_plane, kubectl, helm, root)
    try:
        world.helm_run(
            "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", str(PRODUCTION_VALUES),
            "--values", str(NODE_VALUES), "--wait", "--timeout", "300s",
        )  # fmt: skip
        yield world
    finally:
        world.helm.attempt("--kubeconfig", control_plane.kubeconfig, "uninstall", RELEASE, "-n", NAMESPACE)
        for namespace in (NAMESPACE, TASK_NAMESPACE):
            kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)
        kubectl.run("delete", "pv", "cmbtask-gateway-data", "--wait=false", check=False)
        kubectl.run("label", "node", NODE, "cmbtask.io/runner-", check=False)


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


def test_the_api_server_stamps_who_decides_with_the_policies_auto_installed(installed: Installed) -> None:
    """values: admissionPolicies=auto; this API server offers MutatingAdmissionPolicy."""
    kubectl = installed.kubectl
    assert installed.config_map("rel-cmbtask-gateway")["CMBTASK_KUBERNETES_TRUST_DECIDED_BY"] == "true"
    user = json.loads(kubectl.run("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]["username"]
    decided = yaml.safe_load(EXAMPLE.read_text())
    decided["metadata"]["annotations"] = {
        "cmbtask.io/decision": "approve",
        "cmbtask.io/decided-by": "mallory",
    }

    def dry_run(body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return kubectl.run("apply", "--dry-run=server", "-o", "json", "-n", NAMESPACE, "-f", "-",
                           stdin=yaml.safe_dump(body), check=False)  # fmt: skip

    def stamp() -> str | None:
        result = dry_run(decided)
        if result.returncode != 0:
            return None
        return str(json.loads(result.stdout)["metadata"]["annotations"]["cmbtask.io/decided-by"])

    # not mallory: the policy overwrites a hand-written stamp with the requesting user
    assert wait_for(lambda: stamp() == user, 30, "the policies to stamp the requesting user")
    forged = {
        **decided,
        "metadata": {**decided["metadata"], "annotations": {"cmbtask.io/decided-by": "mallory"}},
    }
    refused = dry_run(forged)
    assert refused.returncode != 0 and "decided-by" in refused.stderr, refused.stderr


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


def test_gateway_and_operator_run_as_pods_of_the_built_images(installed: Installed) -> None:
    [gateway] = installed.pods(GATEWAY_SELECTOR)
    operators = installed.pods("app.kubernetes.io/instance=rel,app.kubernetes.io/component=operator")
    assert len(operators) == 2
    for pod, image in [(gateway, GATEWAY_IMAGE)] + [(o, OPERATOR_IMAGE) for o in operators]:
        (status,) = pod["status"]["containerStatuses"]
        assert (status["image"], status["ready"]) == (image, True), status
    # the image's numeric user, enforced by the runtime
    uid = installed.kubectl.run("exec", "-n", NAMESPACE, gateway["metadata"]["name"], "-c", "gateway", "--",
                                "id", "-u").stdout  # fmt: skip
    assert uid.strip() == "10001"
    # two replicas in the values: the operator makes its peering objects itself
    for namespace in (NAMESPACE, TASK_NAMESPACE):
        wait_for(lambda: installed.kubectl.get("kopfpeering", "cmbtask", namespace), 60,  # noqa: B023
                 f"the operator's peering object in {namespace}")  # fmt: skip


async def test_task_through_the_service_runs_in_a_runner_pod_and_streams(installed: Installed) -> None:
    token = installed.token("alice")
    with installed.client(token) as http:
        session_id = _new_session(http)
        client = SessionClient(SERVICE_URL.replace("http://", "ws://"), session_id, token)
        await client.connect(after=0)
        params = {"steps": 2, "step_delay_s": 0.2, "lines_per_step": 2}
        task = _submit(http, session_id, engine="demo", mode="planning-control", params=params)
        await client.read_until(lambda c: any(e["type"] in FINAL for e in c.events), timeout_s=240)
        await client.close()
    types = [e["type"] for e in client.events if e["task_id"] == task["id"]]
    assert types[0] == "task.queued" and types[-1] == "task.succeeded", types
    assert types.count("step.completed") == 2
    selector = f"cmbtask.io/cmbtask={cmbtask_name_for_task(task['id'])}"

    def finished_pod() -> dict[str, Any] | None:
        pods = installed.pods(selector)
        return pods[0] if len(pods) == 1 and pods[0]["status"].get("phase") == "Succeeded" else None

    # the runner exits just after its last event
    pod = wait_for(finished_pod, 60, "the runner pod to end")
    (status,) = pod["status"]["containerStatuses"]
    assert status["image"] == RUNNER_IMAGE
    assert status["state"]["terminated"]["exitCode"] == 0


def test_example_cmbtask_applied_with_kubectl_runs_and_shows_in_the_gateway(installed: Installed) -> None:
    kubectl = installed.kubectl
    kubectl.run("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
    status = _wait_finished(kubectl, "cmbtask-demo")
    assert status["phase"] == "succeeded", status
    pod = kubectl.get("pod", "cmbtask-demo-runner", NAMESPACE)
    assert pod is not None
    runner = yaml.safe_load(PRODUCTION_VALUES.read_text())["runner"] | _node_values()["runner"]
    assert pod["spec"]["nodeSelector"] == runner["nodeSelector"]
    assert [t["key"] for t in pod["spec"]["tolerations"]][:1] == [runner["tolerations"][0]["key"]]
    (container,) = pod["spec"]["containers"]
    assert container["resources"] == runner["resources"]
    # the runner's output, read back from the node by the API server
    assert kubectl.run("logs", "-n", NAMESPACE, "cmbtask-demo-runner").stdout.strip()
    table = kubectl.run("get", "ct", "-n", NAMESPACE, "cmbtask-demo").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "SESSION", "MODE", "POD", "APPROVAL", "AGE"]
    assert table[1].split()[:2] == ["cmbtask-demo", "succeeded"]
    with installed.client(installed.token("local")) as http:
        sessions = http.get("/api/sessions").json()["items"]
        assert sessions, "the gateway imported no session for the CmbTask"
        session = next(s for s in sessions if s["title"] == "kubectl: cmbtask-demo")
        events = http.get(f"/api/sessions/{session['id']}/events", params={"after": 0}).json()["items"]
    types = [event["type"] for event in events]
    assert types[0] == "task.queued" and types[-1] == "task.succeeded", types
    assert types.count("step.completed") == 3


def test_deleting_the_gateway_pod_mid_task_loses_nothing(installed: Installed) -> None:
    token = installed.token("alice")
    with installed.client(token) as http:
        session_id = _new_session(http)
        params = {"steps": 6, "step_delay_s": 1.5, "lines_per_step": 1}
        task = _submit(http, session_id, engine="demo", mode="one-shot", params=params)
        _task_phase(http, task["id"], {"running"})
    [old] = installed.pods(GATEWAY_SELECTOR)
    installed.kubectl.run("delete", "pod", "-n", NAMESPACE, old["metadata"]["name"], "--wait=false")

    def replaced_and_ready() -> bool:
        pods = [p for p in installed.pods(GATEWAY_SELECTOR) if p["metadata"]["uid"] != old["metadata"]["uid"]]
        conditions = {c["type"]: c["status"] for p in pods for c in p["status"].get("conditions", [])}
        return conditions.get("Ready") == "True"

    wait_for(replaced_and_ready, 180, "a new gateway pod to be ready", interval_s=1)
    with installed.client(token) as http:
        ended = _task_phase(http, task["id"], FINAL_PHASES, timeout_s=240)
        assert ended["phase"] == "succeeded", ended
        events = http.get(f"/api/sessions/{session_id}/events", params={"after": 0}).json()["items"]
    types = [e["type"] for e in events]
    assert types.count("task.succeeded") == 1 and types.count("step.completed") == 6, types
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_deleting_a_runner_pod_fails_its_task_with_the_reason(installed: Installed) -> None:
    # the kubelet stops the deleted pod's runner with SIGTERM, which no cancel asked for
    token = installed.token("alice")
    with installed.client(token) as http:
        session_id = _new_session(http)
        params = {"steps": 60, "step_delay_s": 1.0, "lines_per_step": 1}
        task = _submit(http, session_id, engine="demo", mode="one-shot", params=params)
        _task_phase(http, task["id"], {"running"})
        name = cmbtask_name_for_task(task["id"])
        [pod] = installed.pods(f"cmbtask.io/cmbtask={name}")
        installed.kubectl.run("delete", "pod", "-n", NAMESPACE, pod["metadata"]["name"], "--wait=false")
        ended = _task_phase(http, task["id"], FINAL_PHASES, timeout_s=120)
    status = _wait_finished(installed.kubectl, name)
    assert (status["phase"], status["reason"]) == ("failed", "PodDeleted"), status
    # the runner's reason names SIGTERM; the watchdog's, if the runner could not report, the deletion
    assert ended["phase"] == "failed" and "deleted" in ended["reason"], ended


def test_the_runner_network_policy_lets_a_runner_reach_the_gateway_and_nothing_else(
    installed: Installed,
) -> None:
    # enforced by the node's firewall (kube-router's policy controller, scripts/node.sh)
    token = installed.token("alice")
    with installed.client(token) as http:
        session_id = _new_session(http)
        # long enough for the probes below to run inside the runner
        params = {"steps": 30, "step_delay_s": 1.0, "lines_per_step": 1}
        task = _submit(http, session_id, engine="demo", mode="one-shot", params=params)
        _task_phase(http, task["id"], {"running"})
        [runner] = installed.pods(f"cmbtask.io/cmbtask={cmbtask_name_for_task(task['id'])}")
        [gateway] = installed.pods(GATEWAY_SELECTOR)
        operator = installed.pods(OPERATOR_SELECTOR)[0]
        [gateway_port] = [
            p["containerPort"] for c in gateway["spec"]["containers"] for p in c.get("ports", [])
        ]
        allowed = [SERVICE_URL.removeprefix("http://"), f"{gateway['status']['podIP']}:{gateway_port}"]
        # open to a pod the policy does not select: another pod, the API server on the host, its Service
        api_server = installed.plane.env["CMBTASK_K8S_SERVER"].removeprefix("https://")
        others = [f"{operator['status']['podIP']}:{OPERATOR_HEALTH_PORT}", api_server, "10.250.0.1:443"]
        from_gateway = _probe(installed.kubectl, gateway["metadata"]["name"], allowed + others)
        assert from_gateway == dict.fromkeys(allowed + others, "open"), from_gateway
        expected = dict.fromkeys(allowed, "open") | dict.fromkeys(others, "refused")
        runner_name, targets = runner["metadata"]["name"], allowed + others
        seen: list[dict[str, str]] = []

        def runner_as_policy_says() -> bool:
            seen.append(_probe(installed.kubectl, runner_name, targets))
            return seen[-1] == expected

        # a new pod is firewalled at the controller's next sync, well before this
        with contextlib.suppress(AssertionError):
            wait_for(runner_as_policy_says, 15, "the runner's egress to follow the policy", interval_s=1)
        assert seen[-1] == expected, f"the runner reached {seen[-1]}; the policy says {expected}"
        # and the runner's own connection to the gateway carried the whole task
        ended = _task_phase(http, task["id"], FINAL_PHASES, timeout_s=120)
    assert ended["phase"] == "succeeded", ended


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
    # the release's pods go; what stays are the finished runner pods, owned by
    # the CmbTasks that the kept CRD keeps
    wait_for(lambda: installed.pods("app.kubernetes.io/instance=rel") == [], 120, "the release's pods to go")
    phases = {p["status"]["phase"] for p in installed.pods("app.kubernetes.io/component=runner")}
    assert phases <= {"Succeeded", "Failed"}, phases


# ---- helpers ---------------------------------------------------------------------


def _release_unowned_crds(kubectl: Kubectl) -> None:
    """CRDs that an earlier suite applied with kubectl are not the release's:
    helm refuses to adopt them. None of their objects outlive that suite."""
    for crd in ("cmbtasks.cmbtask.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        found = kubectl.get("crd", crd, "default")
        if found and (found["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != "Helm":
            kubectl.run("delete", "crd", crd, "--wait=true", "--timeout=60s")


def _static_volume(kubectl: Kubectl, path: Path) -> None:
    """The gateway's SQLite home: this cluster has no storage provisioner, so
    a hostPath PersistentVolume that the chart's claim binds to. A hostPath
    gets no fsGroup: the directory belongs to the images' user."""
    path.mkdir(parents=True)
    os.chown(path, 10001, 10001)
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "cmbtask-gateway-data"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }
    kubectl.apply(volume)


def _probe(kubectl: Kubectl, pod: str, targets: list[str]) -> dict[str, str]:
    out = kubectl.run("exec", "-n", NAMESPACE, pod, "--", "python3", "-c", PROBE, *targets).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _new_session(http: httpx.Client) -> str:
    response = http.post("/api/sessions", json={"title": "helm install"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _submit(http: httpx.Client, session_id: str, **body: Any) -> dict[str, Any]:
    response = http.post(f"/api/sessions/{session_id}/tasks", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _task_phase(http: httpx.Client, task_id: str, phases: set[str], timeout_s: float = 120) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        try:
            task = dict(http.get(f"/api/tasks/{task_id}").json())
        except (httpx.HTTPError, json.JSONDecodeError):
            return None  # the gateway between two pods
        return task if task.get("phase") in phases else None

    return wait_for(reached, timeout_s, f"task {task_id} to reach {phases}", interval_s=0.5)


def _wait_finished(kubectl: Kubectl, name: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        found = kubectl.get("cmbtask", name, NAMESPACE) or {}
        status: dict[str, Any] = found.get("status") or {}
        return status if status.get("phase") in FINAL_PHASES else None

    return wait_for(finished, 240, f"CmbTask {name} to finish", interval_s=0.5)
