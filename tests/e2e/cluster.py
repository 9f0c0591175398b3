"""Handles on the e2e world: the cluster, kubectl and the processes run beside it.

The cluster (scripts/control-plane.sh) is a control plane and one real node;
processes started here run on the host with free ports, and every one is
stopped by the fixture that started it. Pods reach the host only at the
node's bridge address (NODE_IP), never at its loopback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "control-plane.sh"
CRD_FILE = REPO / "charts" / "cmbtask" / "files" / "cmbtasks.crd.yaml"
#: where host processes listen for pods: the node's bridge address
NODE_IP = "10.88.0.1"


def _version() -> str:
    found = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert found is not None, "no version in pyproject.toml"
    return found.group(1)


VERSION = _version()
#: built from the root Dockerfile by scripts/images.sh, in the node's image store
RUNNER_IMAGE = f"docker.io/cmbtask/runner:{VERSION}"
GATEWAY_IMAGE = f"docker.io/cmbtask/gateway:{VERSION}"
OPERATOR_IMAGE = f"docker.io/cmbtask/operator:{VERSION}"
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")


class ControlPlane:
    """The control plane and its node, from scripts/control-plane.sh."""

    def __init__(self, run_dir: Path, *, owned: bool) -> None:
        self.run_dir = run_dir
        self.owned = owned
        self.env: dict[str, str] = {}

    @classmethod
    def start(cls, run_dir: Path) -> ControlPlane:
        out = subprocess.run(
            ["bash", str(SCRIPT), "start", str(run_dir)],
            check=True,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        plane = cls(run_dir, owned=True)
        plane.env = _parse_exports(out.stdout)
        return plane

    @classmethod
    def attach(cls, run_dir: Path) -> ControlPlane:
        out = subprocess.run(
            ["bash", str(SCRIPT), "env", str(run_dir)], check=True, capture_output=True, text=True
        )
        plane = cls(run_dir, owned=False)
        plane.env = _parse_exports(out.stdout)
        return plane

    def stop(self) -> None:
        if self.owned:
            subprocess.run(["bash", str(SCRIPT), "stop", str(self.run_dir)], check=False, timeout=60)

    @property
    def kubeconfig(self) -> str:
        return self.env["KUBECONFIG"]

    def kubectl(self) -> Kubectl:
        return Kubectl(self.env["CMBTASK_KUBECTL"], self.kubeconfig)


def _parse_exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export ") :].split("=", 1)
            env[key] = value
    return env


class Kubectl:
    """kubectl, used exactly as a user would."""

    def __init__(self, binary: str, kubeconfig: str) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, "--kubeconfig", self.kubeconfig, *args],
            input=stdin, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def apply(
        self,
        *manifests: dict[str, Any],
        namespace: str | None = None,
        check: bool = True,
        extra: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        text = yaml.safe_dump_all(list(manifests))
        where = ["-n", namespace] if namespace else []
        return self.run("apply", *where, *extra, "-f", "-", stdin=text, check=check)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        result = self.run("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        return dict(json.loads(result.stdout))

    def items(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        extra = ["-l", selector] if selector else []
        result = self.run("get", kind, "-n", namespace, *extra, "-o", "json")
        return list(json.loads(result.stdout)["items"])


class Process:
    """A background Python process with its log in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *self.args], env={**os.environ, **self.env}, stdout=log,
                stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 15) -> None:
        if not self.alive:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def cmbtask(name: str, **spec: Any) -> dict[str, Any]:
    """A CmbTask manifest as a user writes it."""
    return {"apiVersion": "cmbtask.io/v1alpha1", "kind": "CmbTask", "metadata": {"name": name}, "spec": spec}


def secret(name: str, token: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"token": token}}
