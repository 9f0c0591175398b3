"""The gateway's kubernetes executor with the real operator: tasks submitted
through the gateway run in pods, and CmbTasks applied with kubectl show up in
the gateway."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.settings import Settings
from cmbtask_protocol import cmbtask_name_for_task

from tests.e2e.cluster import Kubectl, cmbtask, wait_for
from tests.e2e.conftest import GATEWAY_NAMESPACE
from tests.support.clients import SessionClient
from tests.support.gateway import GatewayProcess

pytestmark = [pytest.mark.k8s, pytest.mark.usefixtures("operator")]
FINAL_PHASES = {"succeeded", "failed", "cancelled", "timed_out"}
FINAL = {"task.succeeded", "task.failed", "task.cancelled", "task.timed_out"}
QUICK_DEMO = {"steps": 2, "step_delay_s": 0.1, "lines_per_step": 2}


def new_session(http: httpx.Client) -> str:
    response = http.post("/api/sessions", json={"title": "k8s e2e"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def submit(http: httpx.Client, session_id: str, **body: Any) -> dict[str, Any]:
    response = http.post(f"/api/sessions/{session_id}/tasks", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def task_phase(http: httpx.Client, task_id: str, phases: set[str], timeout_s: float = 90) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        task = dict(http.get(f"/api/tasks/{task_id}").json())
        return task if task.get("phase") in phases else None

    return wait_for(reached, timeout_s, f"task {task_id} to reach {phases}", interval_s=0.3)


def runner_pods(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    return kubectl.items("pods", GATEWAY_NAMESPACE, f"cmbtask.io/cmbtask={name}")


async def test_submitted_task_runs_in_a_pod_and_streams_to_a_websocket(
    gateway: GatewayProcess, kubectl: Kubectl
) -> None:
    with gateway.client() as http:
        session_id = new_session(http)
        client = SessionClient(gateway.ws_url, session_id)
        await client.connect(after=0)
        task = submit(http, session_id, engine="demo", mode="planning-control", params=QUICK_DEMO)
        await client.read_until(lambda c: any(e["type"] in FINAL for e in c.events), timeout_s=120)
        await client.close()
        types = [e["type"] for e in client.events if e["task_id"] == task["id"]]
        assert types[0] == "task.queued" and "task.started" in types
        assert types[-1] == "task.succeeded", types
        assert len(client.of_type("step.completed")) == 2
        assert [e["seq"] for e in client.events] == list(range(1, len(client.events) + 1))
        name = cmbtask_name_for_task(task["id"])
        found = kubectl.get("cmbtask", name, GATEWAY_NAMESPACE)
        assert found is not None
        assert found["spec"]["taskId"] == task["id"] and found["spec"]["sessionId"] == session_id
        [pod] = runner_pods(kubectl, name)
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["CMBTASK_TASK_ID"]["value"] == task["id"]
        assert "valueFrom" in env["CMBTASK_TASK_TOKEN"]
        wait_for(
            lambda: (
                (kubectl.get("cmbtask", name, GATEWAY_NAMESPACE) or {}).get("status", {}).get("phase")
                == "succeeded"
            ),
            30,
            "the CmbTask status to converge",
        )
        assert task_phase(http, task["id"], {"succeeded"})["executor"] == "kubernetes"


def test_cmbtask_applied_with_kubectl_runs_and_appears_in_the_gateway(
    gateway: GatewayProcess, kubectl: Kubectl
) -> None:
    name = f"from-kubectl-{uuid.uuid4().hex[:6]}"
    manifest = cmbtask(name, engine="demo", mode="one-shot", prompt="hello", params=QUICK_DEMO)
    kubectl.apply(manifest, namespace=GATEWAY_NAMESPACE)
    found = wait_for(
        lambda: (
            (kubectl.get("cmbtask", name, GATEWAY_NAMESPACE) or {}).get("spec", {}).get("taskId")
            and kubectl.get("cmbtask", name, GATEWAY_NAMESPACE)
        ),
        30,
        "the gateway to import the CmbTask",
    )
    task_id, session_id = found["spec"]["taskId"], found["spec"]["sessionId"]
    with gateway.client() as http:
        task = task_phase(http, task_id, {"succeeded"}, timeout_s=120)
        assert (task["session_id"], task["prompt"], task["engine"]) == (session_id, "hello", "demo")
        sessions = http.get("/api/sessions").json()["items"]
        assert session_id in [s["id"] for s in sessions]
        events = http.get(f"/api/sessions/{session_id}/events", params={"after": 0}).json()["items"]
        assert [e["type"] for e in events][-1] == "task.succeeded"
    assert len(runner_pods(kubectl, name)) == 1
    table = kubectl.run("get", "cmbtasks", "-n", GATEWAY_NAMESPACE, name).stdout
    assert session_id in table


def test_gateway_dying_between_registering_and_labelling_an_import_makes_no_second_task(
    gateway: GatewayProcess, kubectl: Kubectl
) -> None:
    """The crash window of an import, made on purpose: the object is registered
    in the gateway's database but never labelled. The restarted gateway must
    launch that same task into that same object: one task, one pod."""
    name = f"half-imported-{uuid.uuid4().hex[:6]}"
    gateway.kill()
    try:
        kubectl.apply(cmbtask(name, engine="demo", mode="one-shot", prompt="once", params=QUICK_DEMO),
                      namespace=GATEWAY_NAMESPACE)  # fmt: skip
        found = wait_for(lambda: kubectl.get("cmbtask", name, GATEWAY_NAMESPACE), 10, "the CmbTask")
        uid = found["metadata"]["uid"]
        task_id, session_id = asyncio.run(_register(gateway.database_url, name, uid, found["spec"]))
    finally:
        gateway.start()
    with gateway.client() as http:
        task = task_phase(http, task_id, {"succeeded"}, timeout_s=120)
        assert task["session_id"] == session_id
        titles = [s["title"] for s in http.get("/api/sessions", params={"limit": 200}).json()["items"]]
    assert titles.count(f"kubectl: {name}") == 1
    labelled = kubectl.items("cmbtasks", GATEWAY_NAMESPACE, f"cmbtask.io/task-id={task_id}")
    assert [o["metadata"]["name"] for o in labelled] == [name]
    assert kubectl.get("cmbtask", cmbtask_name_for_task(task_id), GATEWAY_NAMESPACE) is None
    [pod] = runner_pods(kubectl, name)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["CMBTASK_TASK_ID"] == task_id


async def _register(database_url: str, name: str, uid: str, spec: dict[str, Any]) -> tuple[str, str]:
    # the gateway's own records without its process; a secret key, so no data dir is written
    built = Gateway.build(Settings(database_url=database_url, executor="none", secret_key="unused"))
    try:
        return await built.records.register("local", name, uid, spec)
    finally:
        await built.engine.dispose()


GREEDY = """
import time
print("allocating", flush=True)
hoard = []
for _ in range(60):  # 600 MiB, 10 MiB at a time, every page touched
    hoard.append(b"x" * (10 * 2**20))
    time.sleep(0.05)
time.sleep(30)
"""


def test_runner_over_its_memory_limit_fails_the_task_oomkilled(
    gateway: GatewayProcess, kubectl: Kubectl
) -> None:
    name = f"greedy-{uuid.uuid4().hex[:6]}"
    manifest = cmbtask(name, engine="script", mode="one-shot", params={"code": GREEDY},
                       resources={"limits": {"memory": "200Mi"}})  # fmt: skip
    kubectl.apply(manifest, namespace=GATEWAY_NAMESPACE)

    def failed() -> dict[str, Any] | None:
        found = kubectl.get("cmbtask", name, GATEWAY_NAMESPACE) or {}
        return found if (found.get("status") or {}).get("phase") in FINAL_PHASES else None

    status = wait_for(failed, 120, f"{name} to end")["status"]
    # The kernel's OOM killer picks the script's process in the container's
    # cgroup; the runner (the container's main process) then exits non-zero
    # and the kubelet reports the container OOMKilled.
    assert (status["phase"], status["reason"]) == ("failed", "OOMKilled"), status
    assert status["exitCode"] not in (None, 0), status
    [pod] = runner_pods(kubectl, name)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled", terminated
    task_id = kubectl.get("cmbtask", name, GATEWAY_NAMESPACE)["spec"]["taskId"]  # type: ignore[index]
    with gateway.client() as http:
        task = task_phase(http, task_id, FINAL_PHASES, timeout_s=60)
        events = http.get(f"/api/sessions/{task['session_id']}/events", params={"after": 0}).json()["items"]
    assert task["phase"] == "failed" and "OOMKilled" in (task["reason"] or ""), task
    assert any("allocating" in e["data"].get("text", "") for e in events if e["type"] == "output")


def test_cancel_through_the_gateway_deletes_the_pod(gateway: GatewayProcess, kubectl: Kubectl) -> None:
    with gateway.client() as http:
        session_id = new_session(http)
        params = {**QUICK_DEMO, "approve_plan": True}
        task = submit(http, session_id, engine="demo", mode="planning-control", params=params)
        name = cmbtask_name_for_task(task["id"])
        task_phase(http, task["id"], {"waiting_approval"})
        # the approval waiting in the gateway shows in kubectl
        wait_for(
            lambda: (
                (kubectl.get("cmbtask", name, GATEWAY_NAMESPACE) or {}).get("status", {}).get("phase")
                == "waiting_approval"
            ),
            30,
            "the pending approval to show on the CmbTask",
        )
        table = kubectl.run("get", "cmbtasks", "-n", GATEWAY_NAMESPACE, name).stdout
        assert "waiting_approval" in table
        status = (kubectl.get("cmbtask", name, GATEWAY_NAMESPACE) or {}).get("status", {})
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["AwaitingApproval"]["status"] == "True"
        assert conditions["AwaitingApproval"]["message"] == status["approval"]["prompt"]
        assert len(runner_pods(kubectl, name)) == 1
        response = http.post(f"/api/tasks/{task['id']}/cancel")
        assert response.status_code in (200, 202), response.text
        ended = task_phase(http, task["id"], {"cancelled", "failed", "succeeded", "timed_out"}, timeout_s=60)
        assert ended["phase"] == "cancelled"
    wait_for(lambda: runner_pods(kubectl, name) == [], 60, "the runner pod to be deleted")
    status = (kubectl.get("cmbtask", name, GATEWAY_NAMESPACE) or {}).get("status", {})
    assert status.get("phase") == "cancelled"


def test_gateway_restart_mid_task_adopts_the_running_pod(gateway: GatewayProcess, kubectl: Kubectl) -> None:
    with gateway.client() as http:
        session_id = new_session(http)
        params = {"steps": 4, "step_delay_s": 1.0, "lines_per_step": 1}
        task = submit(http, session_id, engine="demo", mode="one-shot", params=params)
    name = cmbtask_name_for_task(task["id"])
    with gateway.client() as http:
        task_phase(http, task["id"], {"running"})
    gateway.restart()  # SIGKILL, then the same data and port
    with gateway.client() as http:
        ended = task_phase(http, task["id"], FINAL_PHASES, timeout_s=120)
        assert ended["phase"] == "succeeded", ended
        events = http.get(f"/api/sessions/{session_id}/events", params={"after": 0}).json()["items"]
    types = [e["type"] for e in events]
    assert types.count("task.succeeded") == 1 and types.count("step.completed") == 4
    assert len(runner_pods(kubectl, name)) == 1


async def test_cmbtask_applied_with_kubectl_streams_live_to_a_client_already_connected(
    gateway: GatewayProcess, kubectl: Kubectl
) -> None:
    with gateway.client() as http:
        session_id = new_session(http)
    client = SessionClient(gateway.ws_url, session_id)
    await client.connect(after=0)
    name = f"live-{uuid.uuid4().hex[:6]}"
    manifest = cmbtask(name, engine="demo", mode="one-shot", sessionId=session_id, params=QUICK_DEMO)
    kubectl.apply(manifest, namespace=GATEWAY_NAMESPACE)
    try:
        await client.read_until(lambda c: any(e["type"] in FINAL for e in c.events), timeout_s=120)
    finally:
        await client.close()
    types = [e["type"] for e in client.events]
    assert types[0] == "task.queued" and types[-1] == "task.succeeded", types
    assert types.count("step.completed") == 2


PROBE = r"""
import json, os, pathlib
facts = {"uid": os.getuid(), "gid": os.getgid()}
try:
    pathlib.Path("/probe").write_text("x")
    facts["root"] = "writable"
except OSError as error:
    facts["root"] = error.strerror
pathlib.Path(os.environ["CMBTASK_WORK_DIR"], "probe").write_text("x")
facts["token"] = os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
for key in ("Seccomp", "CapEff", "NoNewPrivs"):
    facts[key] = status[key].strip()
for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):
    if os.path.exists(path):
        facts["memory"] = open(path).read().strip()
print("FACTS " + json.dumps(facts, sort_keys=True), flush=True)
"""


def test_runner_pod_runs_as_the_chart_promises_enforced_by_the_runtime(
    gateway: GatewayProcess, kubectl: Kubectl
) -> None:
    """What the pod spec asks for, read back from inside the running container."""
    name = f"probe-{uuid.uuid4().hex[:6]}"
    manifest = cmbtask(name, engine="script", mode="one-shot", params={"code": PROBE},
                       resources={"limits": {"memory": "256Mi"}})  # fmt: skip
    kubectl.apply(manifest, namespace=GATEWAY_NAMESPACE)
    found = wait_for(
        lambda: (kubectl.get("cmbtask", name, GATEWAY_NAMESPACE) or {}).get("spec", {}).get("taskId"),
        30,
        "the gateway to import the CmbTask",
    )
    with gateway.client() as http:
        task = task_phase(http, found, FINAL_PHASES, timeout_s=120)
        events = http.get(f"/api/sessions/{task['session_id']}/events", params={"after": 0}).json()["items"]
    assert task["phase"] == "succeeded", task
    texts = [e["data"].get("text", "") for e in events if e["type"] == "output"]
    lines = [text for text in texts if "FACTS " in text]
    assert lines, [e["type"] for e in events]
    facts = json.loads(lines[0].split("FACTS ", 1)[1])
    assert (facts["uid"], facts["gid"]) == (10001, 10001)
    assert facts["root"] == "Read-only file system"
    assert facts["token"] is False  # automountServiceAccountToken: false
    assert facts["Seccomp"] == "2"  # filter mode: RuntimeDefault
    assert facts["CapEff"] == "0000000000000000" and facts["NoNewPrivs"] == "1"
    assert facts["memory"] == str(256 * 2**20)
