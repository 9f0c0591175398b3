"""Helpers for tests that run real runners under a real gateway (local executor)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support.gateway import GatewayProcess

FINAL = {"succeeded", "failed", "cancelled", "timed_out"}
LOCAL = {"CMBTASK_EXECUTOR": "local", "CMBTASK_CANCEL_GRACE_S": "5", "CMBTASK_WATCHDOG_INTERVAL_S": "0.5"}


def new_session(http: httpx.Client, title: str = "runner test", *, parallel_tasks: bool = False) -> str:
    response = http.post("/api/sessions", json={"title": title, "parallel_tasks": parallel_tasks})
    assert response.status_code == 201, response.text
    session_id: str = response.json()["id"]
    return session_id


def submit(http: httpx.Client, session_id: str, **body: Any) -> dict[str, Any]:
    response = http.post(f"/api/sessions/{session_id}/tasks", json=body)
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


def get_task(http: httpx.Client, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = http.get(f"/api/tasks/{task_id}").json()
    return task


async def wait_phase(
    gateway: GatewayProcess, task_id: str, phases: set[str] = FINAL, timeout_s: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with gateway.client() as http:
        while True:
            task = get_task(http, task_id)
            if task["phase"] in phases:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {task['phase']} after {timeout_s} s")
            await asyncio.sleep(0.2)


async def wait_event(
    gateway: GatewayProcess, session_id: str, event_type: str, count: int = 1, timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [event for event in all_events(gateway, session_id) if event["type"] == event_type]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} x {event_type} in session {session_id} after {timeout_s} s")
        await asyncio.sleep(0.2)


def all_events(gateway: GatewayProcess, session_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with gateway.client() as http:
        while True:
            page = http.get(
                f"/api/sessions/{session_id}/events", params={"after": len(events), "limit": 5000}
            ).json()
            events.extend(page["items"])
            if not page["has_more"] or not page["items"]:
                return events


def output_text(events: list[dict[str, Any]], stream: str | None = None) -> str:
    return "".join(
        event["data"]["text"]
        for event in events
        if event["type"] == "output"
        and "dropped" not in event["data"]
        and (stream is None or event["data"]["stream"] == stream)
    )


def runner_pid(task: dict[str, Any]) -> int:
    assert task["handle"], f"task {task['id']} has no handle yet"
    return int(str(task["handle"]).split(":")[0])


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_gone(pids: list[int], timeout_s: float = 15.0) -> bool:
    for _ in range(int(timeout_s / 0.1)):
        if all(gone(pid) for pid in pids):
            return True
        await asyncio.sleep(0.1)
    return all(gone(pid) for pid in pids)


def kill_runners_under(root: Path) -> int:
    """SIGKILL every process whose working directory is under ``root`` (a test's
    leftover runners: they would otherwise retry a dead gateway for minutes)."""
    killed = 0
    for proc in psutil.process_iter(["pid", "cwd"]):
        cwd = proc.info.get("cwd")
        if proc.pid != os.getpid() and cwd and Path(cwd).is_relative_to(root):
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed += 1
    return killed
