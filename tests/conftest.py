"""Shared fixtures: a fresh database per test on every configured backend,
real gateway processes on it, and the one development cluster of a session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import ControlPlane
from tests.support.databases import BACKENDS, fresh_database
from tests.support.gateway import GatewayProcess


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def gateway_factory(database_url: str, tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(data_dir: Path | None = None, **env: str) -> GatewayProcess:
        process = GatewayProcess(data_dir or tmp_path / f"gw{len(started)}", database_url, **env)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    return gateway_factory()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The cluster of this test session: a control plane and one real node
    (scripts/control-plane.sh; reused when ``CMBTASK_K8S_RUN_DIR`` names a
    running one). A machine runs one node, so the deploy and e2e suites share it."""
    existing = os.environ.get("CMBTASK_K8S_RUN_DIR")
    if existing and (Path(existing) / "kubeconfig").exists():
        plane = ControlPlane.attach(Path(existing))
    else:
        plane = ControlPlane.start(tmp_path_factory.mktemp("control-plane"))
    yield plane
    plane.stop()
