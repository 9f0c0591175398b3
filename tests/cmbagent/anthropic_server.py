"""A fake Anthropic Messages API server (``POST /v1/messages``) for offline
CMBAgent runs on a second provider's wire protocol.

It behaves like the real one where the callers can tell: the key in
``x-api-key`` and an ``anthropic-version`` header, ``system`` as a
top-level field, content as a list of typed blocks (``text``, ``tool_use``
with an object ``input``, ``stop_reason == "tool_use"``), ``usage`` as
``input_tokens`` / ``output_tokens``, errors as ``{"type": "error",
"error": {…}}``. What an agent says comes from the same ``AgentScript`` as
the OpenAI-compatible server, and every call lands in the same kind of
ledger.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .agent_scripts import AgentScript, Scripted, recognise
from .openai_server import Ledger, _free_port, _tokens, _valid_or_example

__all__ = ["FakeAnthropic", "running_anthropic"]


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status_code=status)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content")))
    return "\n".join(parts)


def as_chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request in the chat-completions shape ``AgentScript`` reads."""
    messages = [{"role": "system", "content": _text_of(body.get("system"))}]
    for message in body.get("messages") or []:
        messages.append({"role": message.get("role"), "content": _text_of(message.get("content"))})
    return messages


class FakeAnthropic:
    def __init__(self, script: AgentScript | None = None) -> None:
        self.script = script or AgentScript()
        self.ledger = Ledger()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def create(self, body: dict[str, Any], api_key: str) -> dict[str, Any]:
        messages = as_chat_messages(body)
        agent = recognise(messages)
        content, stop = self._shape(body, self.script.reply(agent, messages))
        input_tokens = _tokens(json.dumps(body.get("messages")) + json.dumps(body.get("system") or ""))
        output_tokens = _tokens(json.dumps(content))
        call = self._next_id()
        self.ledger.add(
            {"n": call, "agent": agent, "model": body["model"], "prompt_tokens": input_tokens,
             "completion_tokens": output_tokens, "api_key_suffix": api_key[-6:]}
        )  # fmt: skip
        return {
            "id": f"msg_fake{call:06d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }

    def _shape(self, body: dict[str, Any], scripted: Scripted) -> tuple[list[dict[str, Any]], str]:
        tools = {t["name"]: t.get("input_schema") or {"type": "object"} for t in body.get("tools") or []}
        choice = body.get("tool_choice") or {}
        tool = choice.get("name") if choice.get("type") == "tool" else None
        if tool is None and scripted.tool in tools:
            tool = scripted.tool
        if tool is None and choice.get("type") == "any" and tools:
            tool = next(iter(tools))
        if tool is not None:
            arguments = scripted.arguments if tool == scripted.tool else None
            block = {"type": "tool_use", "id": f"toolu_fake{self._next_id():06d}", "name": tool,
                     "input": _valid_or_example(arguments, tools.get(tool, {"type": "object"}))}  # fmt: skip
            return [block], "tool_use"
        if scripted.text is not None:
            text = scripted.text
        else:
            text = json.dumps(scripted.json_value) if scripted.json_value is not None else "OK."
        return [{"type": "text", "text": text}], "end_turn"


def build_app(fake: FakeAnthropic) -> FastAPI:
    app = FastAPI(title="fake anthropic")

    @app.post("/v1/messages")
    async def messages(request: Request) -> JSONResponse:
        key = request.headers.get("x-api-key", "")
        if not key:
            return _error(401, "authentication_error", "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version header is required")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "the request body is not valid JSON")
        if not isinstance(body, dict) or not body.get("model") or not isinstance(body.get("messages"), list):
            return _error(400, "invalid_request_error", "model and messages are required")
        if not isinstance(body.get("max_tokens"), int):
            return _error(400, "invalid_request_error", "max_tokens: Field required")
        if body.get("stream"):
            return _error(400, "invalid_request_error", "stream=true is not supported by this test server")
        return JSONResponse(fake.create(body, key))

    return app


@contextlib.contextmanager
def running_anthropic(script: AgentScript | None = None) -> Iterator[tuple[str, FakeAnthropic]]:
    """Serve on a free loopback port in a thread; yields (base URL, fake).
    The base URL is what ``ANTHROPIC_BASE_URL`` takes (no ``/v1``)."""
    fake = FakeAnthropic(script)
    config = uvicorn.Config(
        build_app(fake), host="127.0.0.1", port=_free_port(), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-anthropic", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fake Anthropic server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
