"""Operator benchmark: apply N CmbTasks at once on the development control plane.

    .venv/bin/python bench/operator_apply.py [--count 200] [--run-seconds 2]

Starts (or reuses, with ``CMBTASK_K8S_RUN_DIR``) the control plane from
``scripts/control-plane.sh``, a node agent that simulates each pod (Running,
then exit 0 after ``--run-seconds``; no runner processes, so the figure is
the operator's and the API server's, not 200 Pythons on two cores), and the
real operator as its own process. Prints the time until every pod exists,
until every CmbTask status has converged to ``succeeded``, the number of
duplicate pods, and the operator's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmbtask_operator.peering import peering_crds, peering_object

from tests.e2e.cluster import (
    CRD_FILE,
    RUNNER_IMAGE,
    ControlPlane,
    Kubectl,
    Process,
    cmbtask,
    secret,
    wait_for,
)

PEERING = "cmbtask-bench"


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


def counts(kubectl: Kubectl, namespace: str) -> tuple[int, int, int]:
    """(pods, distinct pod owners, CmbTasks succeeded)."""
    pods = kubectl.items("pods", namespace, "app.kubernetes.io/managed-by=cmbtask-operator")
    owners = {p["metadata"]["ownerReferences"][0]["uid"] for p in pods}
    tasks = kubectl.items("cmbtasks", namespace)
    done = sum(1 for t in tasks if (t.get("status") or {}).get("phase") == "succeeded")
    return len(pods), len(owners), done


def run(count: int, run_s: float, work: Path, plane: ControlPlane) -> int:
    kubectl = plane.kubectl()
    prepare(kubectl)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", namespace)
    wait_for(lambda: kubectl.get("serviceaccount", "default", namespace), 30, "the default ServiceAccount")
    env = {"KUBECONFIG": plane.kubeconfig}
    agent = Process("node-agent", ["-m", "tests.e2e.node_agent", "--root", str(work / "pods"),
                                   "--simulate-s", str(run_s)], env, work).start()  # fmt: skip
    operator = Process("operator", ["-m", "cmbtask_operator"], {
        **env, "CMBTASK_OPERATOR_PEERING_NAME": PEERING, "CMBTASK_OPERATOR_IMAGE": RUNNER_IMAGE,
        "CMBTASK_OPERATOR_ENGINES": '["demo"]', "CMBTASK_OPERATOR_GATEWAY_URL": "http://127.0.0.1:9",
    }, work).start()  # fmt: skip
    try:
        time.sleep(3)  # let the operator list, peer and start watching
        # Token Secrets first, untimed: the figure is about the CmbTasks.
        kubectl.apply(*[secret(f"bench-{i}-token", "x") for i in range(count)], namespace=namespace)
        manifests = [cmbtask(f"bench-{i}", engine="demo") for i in range(count)]
        assert operator.process is not None
        with PeakRss(operator.process.pid) as rss:
            started = time.monotonic()
            kubectl.apply(*manifests, namespace=namespace)
            applied = time.monotonic() - started
            wait_for(lambda: counts(kubectl, namespace)[0] >= count, 300, f"{count} pods", interval_s=0.5)
            pods_at = time.monotonic() - started
            wait_for(
                lambda: counts(kubectl, namespace)[2] >= count, 300, "statuses to converge", interval_s=0.5
            )
            converged_at = time.monotonic() - started
        pods, owners, done = counts(kubectl, namespace)
        print(f"cmbtasks applied:        {count} in {applied:.1f} s (one kubectl apply)")
        print(f"all pods exist after:    {pods_at:.1f} s")
        print(f"statuses converged after:{converged_at:6.1f} s (simulated run {run_s:.1f} s per pod)")
        print(f"pods: {pods}, duplicates: {pods - owners}, succeeded: {done}")
        print(f"operator peak RSS:       {rss.peak / 2**20:.0f} MiB")
        ok = converged_at < 60 and pods == owners == count
        print("target (<60 s, no duplicates):", "met" if ok else "MISSED")
        return 0 if ok else 1
    finally:
        operator.stop()
        agent.stop()
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--run-seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cmbtask-bench-") as tmp:
        work = Path(tmp)
        existing = os.environ.get("CMBTASK_K8S_RUN_DIR")
        if existing and (Path(existing) / "kubeconfig").exists():
            plane = ControlPlane.attach(Path(existing))
        else:
            plane = ControlPlane.start(work / "control-plane")
        try:
            return run(args.count, args.run_seconds, work, plane)
        finally:
            plane.stop()


if __name__ == "__main__":
    raise SystemExit(main())
