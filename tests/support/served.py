"""A gateway served by uvicorn inside the test's own event loop: for tests
that patch or observe the gateway's objects while real clients talk to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from cmbtask_gateway.app import create_server_app
from cmbtask_gateway.settings import Settings

from tests.support.gateway import TEST_SECRET, free_port


@contextlib.asynccontextmanager
async def served(database_url: str, data_dir: Path, **settings: Any) -> AsyncIterator[str]:
    """The gateway's base URL (``http://127.0.0.1:PORT``) while it serves."""
    port = free_port()
    config = Settings(
        database_url=database_url, data_dir=data_dir, port=port, secret_key=TEST_SECRET, **settings
    )
    server = uvicorn.Server(
        uvicorn.Config(create_server_app(config), host="127.0.0.1", port=port, log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the gateway did not start"
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
