"""Fixtures for the cmbagent engine: the fake OpenAI server and a real gateway
whose local executor starts runners with this interpreter (the venv that
``scripts/cmbagent.sh`` builds, where cmbagent is installed).

Tests that need the library carry the ``cmbagent`` marker; without the extra
they are not collected at all (run them with the venv's python), while the
library-free unit tests in this folder run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import GatewayProcess

from .agent_scripts import AgentScript
from .openai_server import FakeOpenAI, running_server

HAS_CMBAGENT = importlib.util.find_spec("cmbagent") is not None
#: modules that import cmbagent or run it in a runner
NEEDS_CMBAGENT = [
    "test_fake_openai.py",
    "test_end_to_end.py",
    "test_concurrent.py",
    "test_modes_available.py",
    "test_budget.py",
    "test_providers.py",
    "test_utilities.py",
]
if not HAS_CMBAGENT:
    collect_ignore = NEEDS_CMBAGENT

DUMMY_KEY = "sk-cmbtask-test-0000000000000000"


def local_gateway(data: Path, **env: str) -> GatewayProcess:
    """A gateway on SQLite in ``data`` whose local runners use this venv's
    Python (the one with the release under test), not yet started."""
    return GatewayProcess(
        data,
        f"sqlite+aiosqlite:///{data / 'cmbtask.db'}",
        CMBTASK_EXECUTOR="local",
        CMBTASK_RUNNER_COMMAND=json.dumps([sys.executable, "-m", "cmbtask_runner"]),
        **env,
    )


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[tuple[str, FakeOpenAI]]:
    with running_server(AgentScript(plan_steps=1)) as served:
        yield served


@pytest.fixture(scope="module")
def cmb_gateway(
    fake_openai: tuple[str, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    url, _fake = fake_openai
    data = tmp_path_factory.mktemp("cmbagent-gateway")
    process = local_gateway(
        data,
        # What a deployment sets for its runners; the runner inherits it
        # because the admin opted in (users' own keys: tests/cmbagent/test_budget.py).
        CMBTASK_PROVIDER_KEYS_FALLBACK="true",
        OPENAI_API_KEY=DUMMY_KEY,
        OPENAI_BASE_URL=url,
        CMBAGENT_MODEL="gpt-4.1-2025-04-14",
    ).start(timeout_s=60)
    yield process
    process.stop()


@pytest.fixture
def client(cmb_gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with cmb_gateway.client() as http:
        yield http


def task_dir(gateway: GatewayProcess, task_id: str) -> Path:
    return gateway.data_dir / "tasks" / task_id
