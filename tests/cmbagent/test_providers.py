"""The multi-provider configuration: a deployment with an OpenAI and an
Anthropic key, one agent moved to a Claude model, each provider's wire
protocol served locally. The Claude agent's calls reach the Anthropic server
with the Anthropic key, the others the OpenAI-compatible one, and the task's
events and costs show both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .agent_scripts import AgentScript
from .anthropic_server import FakeAnthropic, running_anthropic
from .conftest import DUMMY_KEY, local_gateway
from .driving import run_task
from .openai_server import FakeOpenAI, running_server

pytestmark = pytest.mark.cmbagent

ANTHROPIC_KEY = "sk-ant-cmbtask-test-1111111111"
CLAUDE = "claude-sonnet-4-6"


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[str, FakeOpenAI, str, FakeAnthropic]]:
    with (
        running_server(AgentScript()) as (openai_url, openai),
        running_anthropic(AgentScript()) as (
            anthropic_url,
            anthropic,
        ),
    ):
        yield openai_url, openai, anthropic_url, anthropic


def test_one_agent_on_claude_the_rest_on_openai(
    providers: tuple[str, FakeOpenAI, str, FakeAnthropic], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_url, openai, anthropic_url, anthropic = providers
    for variable in ("GEMINI_API_KEY", "MISTRAL_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    gateway = local_gateway(
        tmp_path / "data",
        # the gateway's own keys are the runners' (an admin's opt-in; users' own: test_budget.py)
        CMBTASK_PROVIDER_KEYS_FALLBACK="true",
        OPENAI_API_KEY=DUMMY_KEY,
        OPENAI_BASE_URL=openai_url,
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        ANTHROPIC_BASE_URL=anthropic_url,
        CMBAGENT_MODEL="gpt-4.1-2025-04-14",
        CMBAGENT_MODELS=json.dumps({"researcher": CLAUDE}),
    ).start(timeout_s=60)
    try:
        with gateway.client() as client:
            run = run_task(client, "one-shot", "What is the CMB temperature today?", {"agent": "researcher"})
    finally:
        gateway.stop()

    assert run.final["type"] == "task.succeeded", run.final["data"]
    claude_calls = anthropic.ledger.snapshot()
    assert claude_calls and {c["agent"] for c in claude_calls} == {"researcher"}
    assert {c["model"] for c in claude_calls} == {CLAUDE}
    assert {c["api_key_suffix"] for c in claude_calls} == {ANTHROPIC_KEY[-6:]}
    openai_calls = openai.ledger.snapshot()
    assert openai_calls and "researcher" not in {c["agent"] for c in openai_calls}
    assert {c["api_key_suffix"] for c in openai_calls} == {DUMMY_KEY[-6:]}

    said = [m["data"] for m in run.of("agent.message") if m["data"]["agent"] == "researcher"]
    assert any("2.7255 K" in m["content"] for m in said)
    claude_costs = [u["data"] for u in run.of("cost.update") if u["data"]["model"] == CLAUDE]
    assert sum(u["prompt_tokens"] for u in claude_costs) == sum(c["prompt_tokens"] for c in claude_calls)
    assert sum(u["completion_tokens"] for u in claude_costs) == sum(
        c["completion_tokens"] for c in claude_calls
    )
    assert ANTHROPIC_KEY not in str(run.events)
