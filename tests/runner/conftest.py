"""Fixtures for the runner tests: a fake gateway on a free loopback port, and
no runner left behind by a test that failed half-way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.runner.gateway_tasks import kill_runners_under
from tests.runner.runner_fakegw import FakeGateway


@pytest.fixture
async def gw() -> AsyncIterator[FakeGateway]:
    gateway = FakeGateway()
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


@pytest.fixture(autouse=True)
def _no_leftover_runners(tmp_path: Path) -> Iterator[None]:
    yield
    kill_runners_under(tmp_path)
