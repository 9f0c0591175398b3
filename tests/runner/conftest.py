"""Fixtures for the runner tests: a fake gateway on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.runner.runner_fakegw import FakeGateway


@pytest.fixture
async def gw() -> AsyncIterator[FakeGateway]:
    gateway = FakeGateway()
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()
