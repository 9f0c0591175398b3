"""Operator benchmark on the development cluster's real node: N CmbTasks
against N bare pods, in the same run.

    .venv/bin/python bench/operator_apply.py [--count 200]

Starts (or reuses, with ``CMBTASK_K8S_RUN_DIR``) the cluster from
``scripts/control-plane.sh`` and the real operator as its own process. First
N bare pods, each what the operator would make for a task (the runner image,
its command and environment), go in with one ``kubectl apply``; then, once
they are gone, N CmbTasks with one ``kubectl apply``. Every runner dials a
gateway that is not there and keeps retrying, so each pod stays Running and
no task ends: the figure is the operator's, the scheduler's and the
kubelet's, not N tasks' work. Prints, for both, the time until every pod
exists and until every pod is Running (for CmbTasks: every status says
``running``), the operator path's throughput as a fraction of the bare
pods', duplicate pods, and the operator's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmbtask_operator.peering import peering_crds, peering_object

from tests.e2e.cluster import (
    CRD_FILE,
    NODE_IP,
    RUNNER_IMAGE,
    ControlPlane,
    Kubectl,
    Process,
    cmbtask,
    secret,
    wait_for,
)

PEERING = "cmbtask-bench"
#: nothing listens here: each runner retries, so its pod stays Running
UNREACHABLE = f"http://{NODE_IP}:9"
#: two shared cores: requests small enough for every pod to be scheduled
REQUESTS = {"cpu": "1m", "memory": "16Mi"}
LIMITS = {"cpu": "200m", "memory": "128Mi"}
OPERATOR = "app.kubernetes.io/managed-by=cmbtask-operator"
BARE = "cmbtask.io/bench=bare"


class PeakRss:
    """Samples a process's RSS in a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(2)


def prepare(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", str(CRD_FILE))
    kubectl.apply(*peering_crds())
    kubectl.run("wait", "--for", "condition=established", "--timeout=60s", "crd/cmbtasks.cmbtask.io",
                "crd/clusterkopfpeerings.kopf.dev")  # fmt: skip
    kubectl.apply(peering_object(PEERING))


def bare_pod(name: str) -> dict[str, Any]:
    """What the operator makes for a task, without the CmbTask around it."""
    security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    env = {"CMBTASK_TASK_ID": name, "CMBTASK_GATEWAY_URL": UNREACHABLE, "CMBTASK_TASK_TOKEN": "x",
           "CMBTASK_WORK_DIR": "/work", "HOME": "/work", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    container = {
        "name": "runner", "image": RUNNER_IMAGE, "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "cmbtask_runner"],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": {"requests": REQUESTS, "limits": LIMITS}, "workingDir": "/work",
        "securityContext": security,
        "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "tmp", "mountPath": "/tmp"}],
    }  # fmt: skip
    spec = {
        "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container], "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "work", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }  # fmt: skip
    labels = {"cmbtask.io/bench": "bare"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def running(pods: list[dict[str, Any]]) -> int:
    return sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running")


@dataclass
class Timing:
    applied: float
    exist: float
    converged: float

    def rate(self, count: int) -> float:
        return count / self.converged


def timed(apply: Callable[[], object], exist: Callable[[], bool], converged: Callable[[], bool]) -> Timing:
    started = time.monotonic()
    apply()
    applied = time.monotonic() - started
    wait_for(exist, 600, "every pod to exist", interval_s=0.5)
    exist_at = time.monotonic() - started
    wait_for(converged, 900, "every status to converge", interval_s=0.5)
    return Timing(applied, exist_at, time.monotonic() - started)


def report(label: str, t: Timing, count: int) -> None:
    print(f"{label:10} {count} applied in {t.applied:5.1f} s; all pods exist after "
          f"{t.exist:5.1f} s; all Running/converged after {t.converged:5.1f} s "
          f"({t.rate(count):.1f} pods/s); load average {os.getloadavg()[0]:.0f}", flush=True)  # fmt: skip


def bare_run(kubectl: Kubectl, namespace: str, count: int) -> Timing:
    manifests = [bare_pod(f"bare-{i}") for i in range(count)]
    timing = timed(
        lambda: kubectl.apply(*manifests, namespace=namespace),
        lambda: len(kubectl.items("pods", namespace, BARE)) >= count,
        lambda: running(kubectl.items("pods", namespace, BARE)) >= count,
    )
    report("bare pods", timing, count)
    # 200 pods take minutes to stop on two cores: longer than one kubectl call may wait
    kubectl.run("delete", "pods", "-n", namespace, "-l", BARE, "--wait=false")
    wait_for(lambda: not kubectl.items("pods", namespace, BARE), 900, "the bare pods to go", interval_s=2)
    return timing


def operator_run(kubectl: Kubectl, namespace: str, count: int) -> tuple[Timing, int]:
    # Token Secrets first, untimed: the figure is about the CmbTasks.
    kubectl.apply(*[secret(f"bench-{i}-token", "x") for i in range(count)], namespace=namespace)
    resources = {"requests": REQUESTS, "limits": LIMITS}
    manifests = [cmbtask(f"bench-{i}", engine="demo", gatewayUrl=UNREACHABLE, resources=resources)
                 for i in range(count)]  # fmt: skip

    def statuses_running() -> bool:
        tasks = kubectl.items("cmbtasks", namespace)
        return sum(1 for t in tasks if (t.get("status") or {}).get("phase") == "running") >= count

    timing = timed(
        lambda: kubectl.apply(*manifests, namespace=namespace),
        lambda: len(kubectl.items("pods", namespace, OPERATOR)) >= count,
        statuses_running,
    )
    pods = kubectl.items("pods", namespace, OPERATOR)
    owners = {p["metadata"]["ownerReferences"][0]["uid"] for p in pods}
    return timing, len(pods) - len(owners)


def run(count: int, work: Path, plane: ControlPlane) -> int:
    kubectl = plane.kubectl()
    prepare(kubectl)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", namespace)
    wait_for(lambda: kubectl.get("serviceaccount", "default", namespace), 30, "the default ServiceAccount")
    operator = Process("operator", ["-m", "cmbtask_operator"], {
        "KUBECONFIG": plane.kubeconfig, "CMBTASK_OPERATOR_PEERING_NAME": PEERING,
        "CMBTASK_OPERATOR_IMAGE": RUNNER_IMAGE, "CMBTASK_OPERATOR_ENGINES": '["demo"]',
        "CMBTASK_OPERATOR_GATEWAY_URL": UNREACHABLE, "CMBTASK_OPERATOR_POD_GRACE_S": "1",
    }, work).start()  # fmt: skip
    try:
        bare = bare_run(kubectl, namespace, count)
        assert operator.process is not None
        with PeakRss(operator.process.pid) as rss:
            ours, duplicates = operator_run(kubectl, namespace, count)
        report("CmbTasks", ours, count)
        ratio = ours.rate(count) / bare.rate(count)
        print(f"operator path throughput: {ratio:.2f}x the bare pods' (goal >= 0.8x)")
        print(f"duplicate pods: {duplicates}")
        print(f"operator peak RSS: {rss.peak / 2**20:.0f} MiB")
        ok = ratio >= 0.8 and duplicates == 0
        print("goal (>= 0.8x, no duplicates):", "met" if ok else "MISSED")
        return 0 if ok else 1
    finally:
        operator.stop()
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cmbtask-bench-") as tmp:
        work = Path(tmp)
        existing = os.environ.get("CMBTASK_K8S_RUN_DIR")
        if existing and (Path(existing) / "kubeconfig").exists():
            plane = ControlPlane.attach(Path(existing))
        else:
            plane = ControlPlane.start(work / "control-plane")
        try:
            return run(args.count, work, plane)
        finally:
            plane.stop()


if __name__ == "__main__":
    raise SystemExit(main())
