"""Gateways for the gateway's tests.

``shared_gateway``: a gateway process shared by the tests of one module, on
every configured backend. Starting one costs seconds; modules whose tests can
share one set ``GATEWAY_ENV`` (extra ``CMBTASK_*`` settings) and keep their
tests independent, e.g. by acting as a fresh user each (proxy auth mode).

``built_gateway``: the gateway's services in the test's own event loop, no
server and no executor, for tests of the services themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cmbtask_gateway.composition import Gateway
from cmbtask_gateway.db.migrate import upgrade
from cmbtask_gateway.settings import Settings

from tests.support.databases import BACKENDS, fresh_database
from tests.support.gateway import GatewayProcess


@pytest.fixture
async def built_gateway(database_url: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    await asyncio.to_thread(upgrade, database_url)  # alembic runs its own event loop
    built = Gateway.build(Settings(database_url=database_url, data_dir=tmp_path, executor="none"))
    yield built
    await built.ingest.close()
    await built.store.close()  # its SQLite writer thread
    await built.engine.dispose()


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
