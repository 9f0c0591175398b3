"""The fake OpenAI server is faithful where callers can tell: checked with the
official ``openai`` SDK, the client cmbagent's AG2 fork uses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from .agent_scripts import AgentScript
from .openai_server import FakeOpenAI, running_server

pytestmark = pytest.mark.cmbagent

RESEARCHER_SYSTEM = "You are the researcher agent in the team."
CONTROL_SYSTEM = (
    "You are the control agent in the team. **Current step in plan:**\n2\n**Agent in charge:**\nengineer"
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FakeOpenAI]]:
    with running_server(AgentScript()) as pair:
        yield pair


@pytest.fixture
def sdk(served: tuple[str, FakeOpenAI]) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[0], api_key="sk-fake-123456", max_retries=0)


def _tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": name, "parameters": parameters}}


STATUS_TOOL = _tool(
    "record_status",
    {
        "type": "object",
        "properties": {
            "current_status": {"type": "string", "enum": ["in progress", "failed", "completed"]},
            "current_plan_step_number": {"type": "integer"},
            "current_sub_task": {"type": "string"},
            "current_instructions": {"type": "string"},
            "agent_for_sub_task": {"type": "string", "enum": ["engineer", "researcher"]},
        },
        "required": ["current_status", "current_plan_step_number", "agent_for_sub_task"],
    },
)
OTHER_TOOL = _tool(
    "lookup", {"type": "object", "properties": {"q": {"type": "string", "minLength": 3}}, "required": ["q"]}
)


def test_text_reply_has_usage_and_the_requested_model(
    sdk: openai.OpenAI, served: tuple[str, FakeOpenAI]
) -> None:
    before = len(served[1].ledger.snapshot())
    reply = sdk.chat.completions.create(
        model="gpt-4.1-2025-04-14",
        messages=[{"role": "system", "content": RESEARCHER_SYSTEM}, {"role": "user", "content": "T_cmb?"}],
    )
    assert reply.model == "gpt-4.1-2025-04-14"
    assert reply.choices[0].finish_reason == "stop"
    assert "2.7255 K" in (reply.choices[0].message.content or "")
    assert reply.usage is not None and reply.usage.total_tokens == (
        reply.usage.prompt_tokens + reply.usage.completion_tokens
    )
    (billed,) = served[1].ledger.snapshot()[before:]
    assert billed["agent"] == "researcher" and billed["prompt_tokens"] == reply.usage.prompt_tokens


def test_scripted_tool_call_with_schema_valid_arguments(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(
        model="gpt-4.1-2025-04-14",
        messages=[{"role": "system", "content": CONTROL_SYSTEM}, {"role": "user", "content": "go"}],
        tools=[STATUS_TOOL],  # type: ignore[list-item]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "record_status"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, STATUS_TOOL["function"]["parameters"])
    assert arguments["current_plan_step_number"] == 2 and arguments["agent_for_sub_task"] == "engineer"


def test_forced_tool_choice_is_always_honoured(sdk: openai.OpenAI) -> None:
    # The researcher would answer in text; the caller forces a tool it never scripted.
    reply = sdk.chat.completions.create(
        model="gpt-4.1-2025-04-14",
        messages=[{"role": "system", "content": RESEARCHER_SYSTEM}, {"role": "user", "content": "x"}],
        tools=[STATUS_TOOL, OTHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    )
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "lookup"
    jsonschema.validate(json.loads(call.function.arguments), OTHER_TOOL["function"]["parameters"])


def test_tool_choice_required_and_none(sdk: openai.OpenAI) -> None:
    messages: Any = [{"role": "system", "content": RESEARCHER_SYSTEM}, {"role": "user", "content": "x"}]
    required = sdk.chat.completions.create(
        model="m",
        messages=messages,
        tools=[OTHER_TOOL],
        tool_choice="required",  # type: ignore[list-item]
    )
    assert (required.choices[0].message.tool_calls or [])[0].function.name == "lookup"
    control: Any = [{"role": "system", "content": CONTROL_SYSTEM}, {"role": "user", "content": "x"}]
    none = sdk.chat.completions.create(model="m", messages=control, tools=[STATUS_TOOL], tool_choice="none")  # type: ignore[list-item]
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


class Nested(BaseModel):
    label: Literal["a", "b"]
    weight: float = Field(ge=2.5)


class Unscripted(BaseModel):
    title: str = Field(min_length=12)
    count: int = Field(ge=3, le=7)
    tags: list[str]
    nested: list[Nested]
    note: str | None


def test_response_format_answers_schema_valid_json_for_any_agent(sdk: openai.OpenAI) -> None:
    # An unknown agent and a schema nothing scripted: the answer still parses.
    parsed = sdk.beta.chat.completions.parse(
        model="o3-mini-2025-01-31",
        messages=[{"role": "system", "content": "You are somebody new."}, {"role": "user", "content": "x"}],
        response_format=Unscripted,
    )
    value = parsed.choices[0].message.parsed
    assert isinstance(value, Unscripted)
    assert len(value.title) >= 12 and 3 <= value.count <= 7 and value.nested[0].weight >= 2.5


def test_scripted_json_is_used_when_it_fits_the_schema(sdk: openai.OpenAI) -> None:
    class StructuredMarkdown(BaseModel):
        markdown_block: str
        filename: str

    parsed = sdk.beta.chat.completions.parse(
        model="o3-mini-2025-01-31",
        messages=[
            {"role": "system", "content": "you format the response provided by the researcher agent"},
            {"role": "user", "content": "notes", "name": "researcher"},
        ],
        response_format=StructuredMarkdown,
    )
    value = parsed.choices[0].message.parsed
    assert value is not None and value.filename.endswith(".md") and value.markdown_block == "notes"


def test_errors_look_like_openai_errors(served: tuple[str, FakeOpenAI]) -> None:
    url = served[0]
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    unauthorised = httpx.post(f"{url}/chat/completions", json=body)
    assert unauthorised.status_code == 401 and unauthorised.json()["error"]["type"] == "invalid_api_key"
    bad = httpx.post(f"{url}/chat/completions", json={"model": "m"}, headers={"Authorization": "Bearer k"})
    assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        # no bearer token (openai 2.x refuses an empty api_key before sending anything)
        headers = {"Authorization": "Basic eDp5"}
        client = openai.OpenAI(base_url=url, api_key="k", max_retries=0, default_headers=headers)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
