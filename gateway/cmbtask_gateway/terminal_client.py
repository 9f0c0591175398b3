"""The terminal client behind ``cmbtask submit`` and ``cmbtask watch``.

It speaks the same REST and WebSocket protocol as the web UI: live output,
a progress bar for plan steps, and approvals answered at the prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from .client_errors import ApiError
from .console import console, say, warn

__all__ = ["ApiError", "headers_for", "raise_for", "spend_line", "submit", "watch"]

FINAL = {"task.succeeded", "task.failed", "task.cancelled", "task.timed_out"}


def headers_for(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


async def submit(args: argparse.Namespace) -> int:
    async with httpx.AsyncClient(base_url=args.url, headers=headers_for(args.token), timeout=30) as http:
        session_id = args.session
        if not session_id:
            title = (args.prompt or f"{args.engine} task")[:80]
            response = await http.post("/api/sessions", json={"title": title, "mode": args.mode})
            raise_for(response)
            session_id = response.json()["id"]
        body = {
            "engine": args.engine,
            "mode": args.mode,
            "prompt": args.prompt,
            "params": _params(args.param),
            "timeout_s": args.timeout,
            "max_cost_usd": args.max_cost_usd,
            "max_tokens": args.max_tokens,
            "retries": args.retries,
        }
        if args.retry_backoff is not None:
            body["retry_backoff_s"] = args.retry_backoff
        response = await http.post(f"/api/sessions/{session_id}/tasks", json=body)
        raise_for(response)
        task = response.json()
    say(f"session {session_id}  task {task['id']}  ({task['phase']})", soft_wrap=True)
    if args.no_watch:
        return 0
    args.session, args.after, args.until_done = session_id, 0, True
    return await watch(args)


def raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        message = response.json().get("message", response.text)
    except ValueError:
        message = response.text
    raise ApiError(response.status_code, message)


def _ws_url(base: str, session_id: str, after: int, token: str | None) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = f"after={after}" + (f"&token={token}" if token else "")
    return urlunsplit((scheme, parts.netloc, f"/ws/sessions/{session_id}", query, ""))


def spend_line(data: dict[str, Any]) -> str:
    """``spent $0.12 of $0.50 · 3,400 tokens of 10,000`` from a ``cost.update``."""
    spent = data.get("total_cost_usd", data.get("cost_usd", 0.0))
    cost = f"spent ${spent:.4f}"
    if data.get("max_cost_usd") is not None:
        cost += f" of ${data['max_cost_usd']:.2f}"
    tokens = data.get("total_tokens")
    if tokens is None:
        return cost
    words = f"{tokens:,} tokens"
    if data.get("max_tokens") is not None:
        words += f" of {data['max_tokens']:,}"
    return f"{cost} · {words}"


class _View:
    """Renders events; remembers the cursor and which tasks are still open."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bar: Any = None
        self.last_seq = 0
        self.open_tasks: set[str] = set()
        self.pending: dict[str, dict[str, Any]] = {}

    def show(self, event: dict[str, Any]) -> None:
        self.last_seq = event["seq"]
        kind, data, task = event["type"], event.get("data", {}), event.get("task_id")
        if kind == "task.queued" and task:
            self.open_tasks.add(task)
        elif kind in FINAL and task:
            self.open_tasks.discard(task)
            say(f"[bold]{kind}[/bold] {data.get('reason', '')}")
        elif kind == "output":
            say(data.get("text", "").rstrip("\n"), markup=False)
        elif kind == "agent.message":
            say(f"[cyan]{data.get('agent')}[/cyan]: {data.get('content', '')}", markup=True)
        elif kind == "plan.proposed":
            for number, step in enumerate(data.get("steps", []), 1):
                say(f"  plan {number}. {step.get('title')}")
        elif kind == "step.started":
            self._advance(data["step"] - 1, data["total"], data.get("title", ""))
        elif kind == "step.completed":
            self._advance(data["step"], data["total"], "")
        elif kind == "approval.requested":
            self.pending[data["approval_id"]] = data
        elif kind in {"approval.resolved", "approval.expired", "approval.cancelled"}:
            self.pending.pop(data["approval_id"], None)
            say(f"[yellow]{kind}[/yellow] {data.get('resolved_by', '')}")
        elif kind == "cost.update":
            say(f"[magenta]{spend_line(data)}[/magenta]")
        elif kind == "error":
            warn(f"[red]{data.get('code')}[/red]: {data.get('message')}")

    def _advance(self, done: int, total: int, title: str) -> None:
        if self.bar is None:
            self.bar = self.progress.add_task("steps", total=total)
        self.progress.update(self.bar, completed=done, total=total, description=title or "steps")


async def _ask(view: _View, ws: Any) -> None:
    """Answer pending approvals at the terminal, one at a time."""
    while view.pending:
        approval_id, data = next(iter(view.pending.items()))
        options = "/".join(data.get("options", ["approve", "reject"]))
        say(f"[bold yellow]approval[/bold yellow] {data.get('prompt')}")
        answer = (await asyncio.to_thread(input, f"  {options} > ")).strip()
        decision, _, text = answer.partition(" ")
        frame = {"type": "resolve_approval", "approval_id": approval_id, "decision": decision or "approve"}
        if text:
            frame["text"] = text
        await ws.send(json.dumps(frame))
        view.pending.pop(approval_id, None)


async def watch(args: argparse.Namespace) -> int:
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bar:
        view = _View(bar)
        view.last_seq = args.after
        delay = 0.5
        while True:
            try:
                async with websockets.connect(
                    _ws_url(args.url, args.session, view.last_seq, args.token)
                ) as ws:
                    delay = 0.5
                    if await _consume(view, ws, args.until_done):
                        return 0
            except (OSError, websockets.ConnectionClosedError) as error:
                warn(f"[dim]reconnecting after {delay:.1f}s ({error})[/dim]")
            except websockets.ConnectionClosedOK:
                return 0
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def _consume(view: _View, ws: Any, until_done: bool) -> bool:
    async for message in ws:
        frame = json.loads(message)
        if "seq" in frame:
            view.show(frame)
        elif frame.get("type") == "ws.error":
            warn(f"[red]{frame.get('code')}[/red]: {frame.get('message')}")
        if view.pending:
            await _ask(view, ws)
        settled = frame.get("type") in FINAL or (frame.get("type") == "ws.replayed" and view.last_seq > 0)
        if until_done and settled and not view.open_tasks:
            return True
    return False
