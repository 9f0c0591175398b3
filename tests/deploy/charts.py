"""Run helm against the chart and read what it renders.

``helm`` comes from ``CMBTASK_HELM`` or from ``scripts/helm.sh``, which builds
it from its Go module on first use and prints the cached binary's path.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CHART", "REPO", "Helm", "Manifests", "locate_helm"]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cmbtask"
HELM_TIMEOUT_S = 120
BUILD_TIMEOUT_S = 900


def locate_helm() -> Path:
    """The helm binary; raises RuntimeError with the reason when there is none."""
    configured = os.environ.get("CMBTASK_HELM")
    if configured:
        path = Path(configured)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"CMBTASK_HELM={configured} is not an executable")
        return path
    built = subprocess.run(
        ["bash", str(REPO / "scripts" / "helm.sh")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if built.returncode != 0:
        raise RuntimeError(f"scripts/helm.sh failed: {built.stderr[-2000:]}")
    return Path(built.stdout.strip().splitlines()[-1])


@dataclass(frozen=True, slots=True)
class Helm:
    binary: Path

    def attempt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            timeout=HELM_TIMEOUT_S,
            check=False,
        )

    def run(self, *args: str) -> str:
        result = self.attempt(*args)
        if result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def template(
        self,
        *values_files: Path,
        sets: dict[str, str] | None = None,
        namespace: str = "cmbtask",
        chart: Path = CHART,
        extra: tuple[str, ...] = (),
    ) -> Manifests:
        args = ["template", "rel", str(chart), "--namespace", namespace, *extra]
        for path in values_files:
            args += ["--values", str(path)]
        for key, value in (sets or {}).items():
            args += ["--set", f"{key}={value}"]
        return Manifests([doc for doc in yaml.safe_load_all(self.run(*args)) if doc])


class Manifests(list[dict[str, Any]]):
    """Rendered objects with lookups by kind and name."""

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self if doc["kind"] == kind]

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        for doc in self.of_kind(kind):
            meta = doc["metadata"]
            if meta["name"] == name and (namespace is None or meta.get("namespace") == namespace):
                return doc
        raise KeyError(f"no {kind} {name} (namespace {namespace}) among {self.names()}")

    def names(self) -> list[str]:
        return [f"{doc['kind']}/{doc['metadata']['name']}" for doc in self]

    def workloads(self) -> list[dict[str, Any]]:
        return [doc for doc in self if doc["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}]
