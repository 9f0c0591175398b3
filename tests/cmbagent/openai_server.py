"""A fake OpenAI-compatible chat completions server for offline CMBAgent runs.

It behaves like the real ``/v1/chat/completions`` where the callers can tell:
bearer auth, ``usage`` on every answer, ``tool_calls`` with JSON-string
arguments and ``finish_reason == "tool_calls"``, a forced ``tool_choice``
always honoured, and ``response_format`` answered with JSON that validates
against the given schema. What an agent says comes from ``AgentScript``,
which recognises the agent from its system prompt.

Every answered call is appended to a ledger (agent, model, tokens), readable
at ``GET /_fake/ledger``, so tests can check the costs a task reported
against what the "provider" billed.

Run standalone: ``python -m tests.cmbagent.openai_server [--port N]`` prints
the base URL to give cmbagent as ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .agent_scripts import AgentScript, Scripted, recognise
from .jsonschema_values import example_for

__all__ = ["FakeOpenAI", "Ledger", "build_app", "running_server"]


@dataclass(slots=True)
class Ledger:
    """Every call the fake provider billed, in order."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.calls.append(record)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.calls)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    # The shape the OpenAI SDK parses into its exception classes.
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def _tokens(text: str) -> int:
    # ~4 characters per token, as the usual rule of thumb; at least one.
    return max(1, math.ceil(len(text) / 4))


def _forced_tool(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        function = tool_choice.get("function") or {}
        name = function.get("name")
        return str(name) if name else None
    return None


def _tool_schemas(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {}
    for tool in tools:
        function = tool.get("function") or {}
        if tool.get("type") == "function" and function.get("name"):
            schemas[function["name"]] = function.get("parameters") or {"type": "object", "properties": {}}
    return schemas


def _valid_or_example(value: Any, schema: dict[str, Any], *alternatives: Any) -> Any:
    """The first of ``value`` and ``alternatives`` that satisfies ``schema``,
    else a generated instance."""
    for candidate in (value, *alternatives):
        if candidate is None:
            continue
        try:
            jsonschema.validate(candidate, schema)
            return candidate
        except jsonschema.ValidationError:
            pass
    generated = example_for(schema)
    jsonschema.validate(generated, schema)  # the server must never answer invalid JSON
    return generated


class FakeOpenAI:
    """The request handling, separate from HTTP so it is easy to unit-test."""

    def __init__(self, script: AgentScript | None = None) -> None:
        self.script = script or AgentScript()
        self.ledger = Ledger()
        self._ids = itertools.count(1)
        self._ids_lock = threading.Lock()

    def _next_id(self) -> int:
        with self._ids_lock:
            return next(self._ids)

    def complete(self, body: dict[str, Any], api_key: str) -> dict[str, Any]:
        messages: list[dict[str, Any]] = body["messages"]
        agent = recognise(messages)
        scripted = self.script.reply(agent, messages)
        message, finish = self._shape(body, scripted)
        prompt_tokens = _tokens(json.dumps(messages) + json.dumps(body.get("tools") or []))
        completion_tokens = _tokens(json.dumps(message))
        call_id = self._next_id()
        self.ledger.add(
            {
                "n": call_id,
                "agent": agent,
                "model": body["model"],
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "api_key_suffix": api_key[-6:],
                "tool": (message.get("tool_calls") or [{}])[0].get("function", {}).get("name"),
            }
        )
        return {
            "id": f"chatcmpl-fake{call_id:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _shape(self, body: dict[str, Any], scripted: Scripted) -> tuple[dict[str, Any], str]:
        """Make the scripted reply obey the request's tools, tool_choice and response_format."""
        tools = _tool_schemas(body.get("tools") or [])
        tool_choice = body.get("tool_choice", "auto" if tools else "none")
        tool = _forced_tool(tool_choice)
        if tool is None and tool_choice == "required" and tools:
            tool = scripted.tool if scripted.tool in tools else next(iter(tools))
        if tool is None and tool_choice != "none" and scripted.tool in tools:
            tool = scripted.tool
        if tool is not None:
            arguments = scripted.arguments if tool == scripted.tool else None
            args = _valid_or_example(arguments, tools.get(tool, {"type": "object"}))
            call = {"id": f"call_{self._next_id():06d}", "type": "function"}
            call["function"] = {"name": tool, "arguments": json.dumps(args)}
            return {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}, "tool_calls"
        return {"role": "assistant", "content": self._content(body, scripted), "refusal": None}, "stop"

    def _content(self, body: dict[str, Any], scripted: Scripted) -> str:
        response_format = body.get("response_format") or {}
        kind = response_format.get("type")
        if kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            return json.dumps(_valid_or_example(scripted.json_value, schema, *scripted.json_alternatives))
        if kind == "json_object":
            value = scripted.json_value if isinstance(scripted.json_value, dict) else {"text": scripted.text}
            return json.dumps(value)
        if scripted.text is not None:
            return scripted.text
        return json.dumps(scripted.json_value) if scripted.json_value is not None else "OK."


def build_app(fake: FakeOpenAI) -> FastAPI:
    app = FastAPI(title="fake openai")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            return _error(401, "You didn't provide an API key.", "invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict) or not body.get("model") or not isinstance(body.get("messages"), list):
            return _error(400, "'model' and 'messages' are required properties.")
        if body.get("stream"):
            return _error(400, "stream=true is not supported by this test server.")
        return JSONResponse(fake.complete(body, auth.removeprefix("Bearer ")))

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = ["gpt-4.1-2025-04-14", "gpt-4o-2024-11-20", "o3-mini-2025-01-31"]
        return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "fake"} for n in names]}

    @app.get("/_fake/ledger")
    async def ledger() -> dict[str, Any]:
        return {"calls": fake.ledger.snapshot()}

    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_server(script: AgentScript | None = None, port: int = 0) -> Iterator[tuple[str, FakeOpenAI]]:
    """Serve on a free loopback port in a thread; yields (``…/v1`` URL, fake)."""
    fake = FakeOpenAI(script)
    config = uvicorn.Config(
        build_app(fake), host="127.0.0.1", port=port or _free_port(), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-openai", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fake OpenAI server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}/v1", fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--plan-steps", type=int, default=1)
    args = parser.parse_args()
    with running_server(AgentScript(plan_steps=args.plan_steps), args.port) as (url, _fake):
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
