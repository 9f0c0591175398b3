"""A gateway shared by the tests of one module, on every configured backend.

Starting a gateway process costs seconds; modules whose tests can share one
set ``GATEWAY_ENV`` (extra ``CMBTASK_*`` settings) and keep their tests
independent, e.g. by acting as a fresh user each (proxy auth mode).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import BACKENDS, fresh_database
from tests.support.gateway import GatewayProcess


@pytest.fixture(scope="module", params=BACKENDS)
def shared_gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env: dict[str, str] = getattr(request.module, "GATEWAY_ENV", {})
    root = tmp_path_factory.mktemp(f"gw-{request.param}")
    with fresh_database(request.param, root) as url:
        process = GatewayProcess(root / "data", url, **env)
        try:
            yield process.start()
        finally:
            process.stop()
