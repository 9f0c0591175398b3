"""The operator on a real API server: kubectl in, pods and statuses out.

These CmbTasks live in their own namespace, which the gateway does not
import, so each test controls the runner's token and gateway URL itself.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.cluster import ControlPlane, Kubectl, Process, cmbtask, secret, wait_for
from tests.e2e.conftest import PEERING, operator_process
from tests.support.gateway import GatewayProcess

pytestmark = [pytest.mark.k8s, pytest.mark.usefixtures("operator")]

#: nothing listens here: the runner keeps retrying, so its pod stays Running
UNREACHABLE = "http://127.0.0.1:9"


def phase_of(kubectl: Kubectl, name: str, namespace: str) -> str | None:
    found = kubectl.get("cmbtask", name, namespace)
    return ((found or {}).get("status") or {}).get("phase")


def wait_phase(
    kubectl: Kubectl, name: str, namespace: str, phases: set[str], timeout_s: float = 60
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = kubectl.get("cmbtask", name, namespace)
        status = (found or {}).get("status") or {}
        return found if status.get("phase") in phases else None

    return wait_for(reached, timeout_s, f"{name} to reach {phases}")


def pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    return kubectl.items("pods", namespace, "app.kubernetes.io/managed-by=cmbtask-operator")


def running_pod(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any]:
    kubectl.apply(secret(f"{name}-token", "rt1.nobody.0.x"), namespace=namespace)
    kubectl.apply(cmbtask(name, engine="demo", gatewayUrl=UNREACHABLE), namespace=namespace)
    wait_phase(kubectl, name, namespace, {"running"})
    [pod] = pods(kubectl, namespace)
    return pod


def events_for(kubectl: Kubectl, name: str, namespace: str) -> list[dict[str, Any]]:
    out = kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout
    return [e for e in json.loads(out)["items"] if e["involvedObject"].get("name") == name]


def test_invalid_spec_is_refused_by_the_api_server(kubectl: Kubectl, namespace: str) -> None:
    bad_engine = kubectl.apply(cmbtask("bad1", engine="Not An Engine"), namespace=namespace, check=False)
    assert bad_engine.returncode != 0 and "spec.engine" in bad_engine.stderr
    bad_timeout = kubectl.apply(
        cmbtask("bad2", engine="demo", timeoutSeconds=0), namespace=namespace, check=False
    )
    assert bad_timeout.returncode != 0 and "spec.timeoutSeconds" in bad_timeout.stderr
    missing = kubectl.apply(cmbtask("bad3", mode="one-shot"), namespace=namespace, check=False)
    assert missing.returncode != 0 and "spec.engine" in missing.stderr
    assert kubectl.items("cmbtasks", namespace) == []


def test_unknown_engine_fails_with_a_message_and_an_event(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(cmbtask("unknown", engine="quantum"), namespace=namespace)
    found = wait_phase(kubectl, "unknown", namespace, {"failed"})
    assert found["status"]["reason"] == "UnknownEngine"
    assert "quantum" in found["status"]["message"]
    assert pods(kubectl, namespace) == []
    events = wait_for(lambda: events_for(kubectl, "unknown", namespace), 20, "a Kubernetes Event")
    assert any(e["reason"] == "UnknownEngine" and e["type"] == "Warning" for e in events)


def test_missing_secret_fails_after_a_bounded_wait(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(cmbtask("nosecret", engine="demo", tokenSecretName="absent"), namespace=namespace)
    assert phase_of(kubectl, "nosecret", namespace) in (None, "queued")
    found = wait_phase(kubectl, "nosecret", namespace, {"failed"}, timeout_s=90)
    assert found["status"]["reason"] == "MissingSecret"
    assert "absent" in found["status"]["message"]
    assert pods(kubectl, namespace) == []
    events = wait_for(lambda: events_for(kubectl, "nosecret", namespace), 20, "a Kubernetes Event")
    assert [e["type"] for e in events if e["reason"] == "MissingSecret"] == ["Warning"]


def test_image_that_never_pulls_fails_fast(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(secret("pull-token", "x"), namespace=namespace)
    kubectl.apply(cmbtask("pull", engine="demo", image="registry.invalid/nope:1"), namespace=namespace)
    found = wait_phase(kubectl, "pull", namespace, {"failed"}, timeout_s=30)
    assert found["status"]["reason"] == "ErrImagePull"
    assert "nope:1" in found["status"]["message"]
    wait_for(lambda: pods(kubectl, namespace) == [], 30, "the stuck pod to be deleted")
    events = wait_for(lambda: events_for(kubectl, "pull", namespace), 20, "a Kubernetes Event")
    assert any(e["reason"] == "ErrImagePull" and e["type"] == "Warning" for e in events)


def test_runner_exiting_non_zero_fails_the_task_with_its_exit_code(
    kubectl: Kubectl, namespace: str, gateway: GatewayProcess
) -> None:
    # The gateway refuses this token, so the runner gives up and exits non-zero.
    kubectl.apply(secret("badtoken-token", "rt1.someone-else.9999999999.bad"), namespace=namespace)
    kubectl.apply(cmbtask("badtoken", engine="demo"), namespace=namespace)
    found = wait_phase(kubectl, "badtoken", namespace, {"failed"}, timeout_s=60)
    assert found["status"]["exitCode"] not in (None, 0)
    conditions = {c["type"]: c["status"] for c in found["status"]["conditions"]}
    assert conditions["Failed"] == "True" and conditions["PodScheduled"] == "True"
    assert found["status"]["finishTime"]


def test_cancel_via_spec_deletes_the_pod_and_ends_cancelled(kubectl: Kubectl, namespace: str) -> None:
    pod = running_pod(kubectl, "tocancel", namespace)
    assert pod["metadata"]["ownerReferences"][0]["name"] == "tocancel"
    kubectl.run(
        "patch", "cmbtask", "tocancel", "-n", namespace, "--type", "merge", "-p", '{"spec":{"cancel":true}}'
    )
    found = wait_phase(kubectl, "tocancel", namespace, {"cancelled"}, timeout_s=30)
    assert found["status"]["reason"] == "Cancelled"
    wait_for(lambda: pods(kubectl, namespace) == [], 30, "the pod to be deleted")
    assert phase_of(kubectl, "tocancel", namespace) == "cancelled"


def test_pod_past_its_deadline_ends_timed_out(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(secret("slow-token", "x"), namespace=namespace)
    kubectl.apply(
        cmbtask("slow", engine="demo", gatewayUrl=UNREACHABLE, timeoutSeconds=2), namespace=namespace
    )
    [pod] = wait_for(lambda: pods(kubectl, namespace), 30, "the pod")
    assert pod["spec"]["activeDeadlineSeconds"] == 3
    found = wait_phase(kubectl, "slow", namespace, {"timed_out"}, timeout_s=60)
    assert found["status"]["reason"] == "DeadlineExceeded"


def test_deleting_the_cmbtask_garbage_collects_its_pod(kubectl: Kubectl, namespace: str) -> None:
    running_pod(kubectl, "todelete", namespace)
    kubectl.run("delete", "cmbtask", "todelete", "-n", namespace, "--wait=false")
    wait_for(lambda: pods(kubectl, namespace) == [], 60, "the garbage collector to delete the pod")


def test_finished_cmbtask_is_deleted_after_its_ttl(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(cmbtask("short", engine="quantum", ttlSecondsAfterFinished=2), namespace=namespace)
    wait_phase(kubectl, "short", namespace, {"failed"})
    wait_for(lambda: kubectl.get("cmbtask", "short", namespace) is None, 30, "the TTL to delete it")


def test_get_cmbtasks_shows_the_printer_columns(kubectl: Kubectl, namespace: str) -> None:
    running_pod(kubectl, "shown", namespace)
    table = kubectl.run("get", "cmbtasks", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "SESSION", "MODE", "POD", "APPROVAL", "AGE"]
    row = table[1].split()
    assert row[0] == "shown" and row[1] == "running" and "shown-runner" in row
    short = kubectl.run("get", "ct", "-n", namespace, "-o", "wide").stdout
    assert "ENGINE" in short and "demo" in short


def restart(operator: Process, meanwhile: Any = None) -> None:
    operator.kill()
    if meanwhile is not None:
        meanwhile()
    # A replacement with a higher priority takes over at once; the dead
    # one's peering entry would otherwise pause it until it expires.
    priority = int(operator.env.get("CMBTASK_OPERATOR_PRIORITY", str(2**30))) + 1
    operator.env["CMBTASK_OPERATOR_PRIORITY"] = str(priority)
    operator.start()


def test_pod_deleted_while_the_operator_is_down_fails_the_task_once_it_is_back(
    kubectl: Kubectl, namespace: str, operator: Process
) -> None:
    pod = running_pod(kubectl, "orphan", namespace)

    def delete_pod() -> None:
        kubectl.run("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=true", "--timeout=30s")

    restart(operator, delete_pod)
    found = wait_phase(kubectl, "orphan", namespace, {"failed"}, timeout_s=60)
    assert found["status"]["reason"] == "PodDeleted"
    assert pods(kubectl, namespace) == []


def test_operator_restart_mid_task_makes_no_second_pod(
    kubectl: Kubectl, namespace: str, operator: Process, control_plane: ControlPlane, gateway: GatewayProcess,
    tmp_path: Any,
) -> None:  # fmt: skip
    first = running_pod(kubectl, "restart", namespace)
    restart(operator)
    kubectl.run(
        "patch", "cmbtask", "restart", "-n", namespace, "--type", "merge", "-p", '{"spec":{"cancel":true}}'
    )
    wait_phase(kubectl, "restart", namespace, {"cancelled"}, timeout_s=60)
    assert [p["metadata"]["uid"] for p in pods(kubectl, namespace)] in ([], [first["metadata"]["uid"]])
    # and a lower-priority replica stands by instead of acting
    standby = operator_process(control_plane, gateway, tmp_path, "standby")
    standby.env["CMBTASK_OPERATOR_PRIORITY"] = "1"
    standby.start()
    try:

        def standby_listed() -> bool:
            peering = kubectl.get("clusterkopfpeering", PEERING, "default") or {}
            return any(peer.get("priority") == 1 for peer in (peering.get("status") or {}).values())

        wait_for(standby_listed, 30, "the standby replica to join the peering")
        kubectl.apply(cmbtask("after", engine="quantum"), namespace=namespace)
        wait_phase(kubectl, "after", namespace, {"failed"})
        events = wait_for(lambda: events_for(kubectl, "after", namespace), 20, "the Warning event")
        assert sum(e.get("count", 1) for e in events if e["reason"] == "UnknownEngine") == 1
        # kopf starts paused and a lower priority never resumes while the other lives
        assert "Resuming operations" not in standby.log()
        assert "Handler 'launch'" not in standby.log()
    finally:
        standby.stop()
