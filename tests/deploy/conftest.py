"""Fixtures for the deployment tests: helm, and the chart rendered with the
default values and with the production-like values kept in the chart."""

from __future__ import annotations

import os

import pytest

from tests.deploy.charts import CHART, Helm, Manifests, locate_helm

PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"


@pytest.fixture(scope="session")
def helm() -> Helm:
    try:
        return Helm(locate_helm())
    except (RuntimeError, OSError) as error:
        # CI builds helm first (scripts/helm.sh); there a missing helm is a failure.
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"helm is required in CI: {error}")
        pytest.skip(f"helm is not available: {error}")


@pytest.fixture(scope="session")
def default_manifests(helm: Helm) -> Manifests:
    return helm.template()


@pytest.fixture(scope="session")
def production_manifests(helm: Helm) -> Manifests:
    return helm.template(PRODUCTION_VALUES)


@pytest.fixture(scope="session")
def clusterwide_manifests(helm: Helm) -> Manifests:
    """An operator serving every namespace, two of them peering cluster-wide."""
    sets = {"operator.clusterWide": "true", "operator.replicas": "2", "gateway.ingress.enabled": "true"}
    return helm.template(sets=sets)


@pytest.fixture(params=["default", "production", "clusterwide"], scope="session")
def manifests(request: pytest.FixtureRequest) -> Manifests:
    rendered: Manifests = request.getfixturevalue(f"{request.param}_manifests")
    return rendered
