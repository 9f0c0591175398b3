"""A real CMBAgent workflow on the user's own key, stopped by its budget.

The gateway has no provider key of its own here: the key the fake provider
sees is the one the user stored, and the runner stops the workflow once the
calls, priced from the user's price table, cross the task's budget.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import GatewayProcess

from .conftest import local_gateway, task_dir
from .driving import run_task
from .openai_server import FakeOpenAI

pytestmark = pytest.mark.cmbagent

USER_KEY = "sk-user-own-key-5c2e81f0d9ab"
MODEL = "gpt-4.1-2025-04-14"
FORMATTER_MODEL = "o3-mini-2025-01-31"  # cmbagent's response formatters
PROMPT = "What is the temperature of the cosmic microwave background today?"


@pytest.fixture(scope="module")
def keyless_gateway(
    fake_openai: tuple[str, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    url, _fake = fake_openai
    data = tmp_path_factory.mktemp("cmbagent-budget")
    process = local_gateway(
        data,
        OPENAI_API_KEY="",  # the gateway's own: none
        OPENAI_BASE_URL=url,
        CMBAGENT_MODEL=MODEL,
    ).start(timeout_s=60)
    yield process
    process.stop()


def _stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_the_budget_stops_a_real_workflow_run_on_the_users_own_key(
    keyless_gateway: GatewayProcess, fake_openai: tuple[str, FakeOpenAI]
) -> None:
    _url, fake = fake_openai
    before = len(fake.ledger.snapshot())
    with keyless_gateway.client() as client:
        assert client.put("/api/keys/openai", json={"value": USER_KEY}).status_code == 200
        # $1 per thousand tokens for both models the workflow calls: it crosses
        # $0.50 within its first few calls
        price = {"prompt_usd_per_mtok": 1000.0, "completion_usd_per_mtok": 1000.0}
        saved = client.put("/api/settings", json={"prices": {MODEL: price, FORMATTER_MODEL: price}})
        assert saved.status_code == 200, saved.text
        run = run_task(client, "one-shot", PROMPT, {"agent": "researcher"}, max_cost_usd=0.5)
        task = client.get(f"/api/tasks/{run.task_id}").json()

    billed = fake.ledger.snapshot()[before:]
    updates = [u["data"] for u in run.of("cost.update")]
    assert run.final["type"] == "task.failed", run.final
    spent = updates[-1]["total_cost_usd"]
    assert task["reason"] == run.final["data"]["reason"] == f"budget exceeded: ${spent:.2f} of $0.50"
    assert task["max_cost_usd"] == 0.5
    # every call billed was priced from the user's table and added up, and none
    # came after the one that crossed the limit
    assert len(billed) == len(updates) >= 1
    assert spent == pytest.approx(sum(c["prompt_tokens"] + c["completion_tokens"] for c in billed) / 1000)
    assert all(u["max_cost_usd"] == 0.5 for u in updates)
    assert sum(u["total_cost_usd"] > 0.5 for u in updates) == 1
    # the user's key reached the provider, and nothing else
    assert {c["api_key_suffix"] for c in billed} == {USER_KEY[-6:]}
    assert USER_KEY not in str(run.events) + json.dumps(task)
    files = _stored_files(task_dir(keyless_gateway, run.task_id))
    assert any(p.name == "runner.log" for p in files)  # the task's files are kept
    assert not [p for p in _stored_files(keyless_gateway.data_dir) if USER_KEY.encode() in p.read_bytes()]


def test_without_a_stored_key_the_task_is_refused_naming_the_variable(
    keyless_gateway: GatewayProcess,
) -> None:
    token_free = {"X-Forwarded-User": "nobody"}  # auth mode none: everyone is the local user
    with httpx.Client(base_url=keyless_gateway.url, headers=token_free, timeout=30) as client:
        client.delete("/api/keys/openai")
        session = client.post("/api/sessions", json={"title": "no key"}).json()["id"]
        body = {"engine": "cmbagent", "mode": "one-shot", "prompt": PROMPT, "params": {"agent": "researcher"}}
        refused = client.post(f"/api/sessions/{session}/tasks", json=body)
    assert refused.status_code == 422, refused.text
    assert "OPENAI_API_KEY" in refused.json()["message"]
