"""``cmbtask logs TASK [--follow]`` and ``cmbtask files TASK [PATH]``.

Both read the task's stored events through the REST events API: ``logs``
prints its ``output`` events (and with ``--follow`` polls for more until the
task's final event), ``files`` lists what its ``file.created`` events
announced and downloads one from the task's work directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from .console import warn
from .shell_commands import task_id_of
from .shell_output import client, get_json, line, show_json, table
from .terminal_client import FINAL, raise_for

__all__ = ["add_log_commands"]

FOLLOW_POLL_S = 0.5


def _task_events(http: httpx.Client, task: dict[str, Any], after: int) -> tuple[list[dict[str, Any]], int]:
    """This task's events of its session after ``after``, and the new cursor."""
    found: list[dict[str, Any]] = []
    while True:
        page = get_json(http, f"/api/sessions/{task['session_id']}/events", after=after, limit=5000)
        found += [event for event in page["items"] if event.get("task_id") == task["id"]]
        after = page["last_seq"]
        if not page["has_more"]:
            return found, after


def _show_output(event: dict[str, Any], as_json: bool) -> None:
    if as_json:  # JSON Lines: one event a line, for jq
        line(json.dumps(event))
    else:
        line(event["data"].get("text", ""), end="")  # as the task wrote it, chunks and all


def cmd_logs(args: argparse.Namespace) -> int:
    with client(args) as http:
        task = get_json(http, f"/api/tasks/{task_id_of(http, args.task)}")
        cursor, delay = 0, FOLLOW_POLL_S
        while True:
            try:
                events, cursor = _task_events(http, task, cursor)
            except httpx.TransportError as error:
                if not args.follow:
                    raise
                # A gateway restarting or failing over: the cursor resumes where it was.
                warn(f"retrying in {delay:.1f}s ({error})", markup=False)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = FOLLOW_POLL_S
            for event in events:
                if event["type"] == "output":
                    _show_output(event, args.json)
            if not args.follow or any(event["type"] in FINAL for event in events):
                return 0
            time.sleep(FOLLOW_POLL_S)


def _announced(http: httpx.Client, task: dict[str, Any]) -> list[dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for event in _task_events(http, task, 0)[0]:
        if event["type"] == "file.created":
            files[event["data"]["path"]] = event["data"]  # a rewritten file: its last size
    return sorted(files.values(), key=lambda item: str(item["path"]))


def _download(http: httpx.Client, task_id: str, path: str, output: str | None) -> None:
    target = output or PurePosixPath(path).name
    with http.stream("GET", f"/api/tasks/{task_id}/files/{path}") as response:
        if not response.is_success:
            response.read()
            raise_for(response)
        if target == "-":
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        written = 0
        with Path(target).open("wb") as sink:
            for chunk in response.iter_bytes():
                written += sink.write(chunk)
    warn(f"wrote {target} ({written:,} bytes)", markup=False, soft_wrap=True)


def cmd_files(args: argparse.Namespace) -> int:
    with client(args) as http:
        task = get_json(http, f"/api/tasks/{task_id_of(http, args.task)}")
        if args.path:
            _download(http, task["id"], args.path, args.output)
            return 0
        files = _announced(http, task)
    if args.json:
        show_json(files)
    else:
        table(("PATH", "SIZE", "TYPE"), [(f["path"], f"{f['size']:,}", f.get("mime")) for f in files])
    return 0


def add_log_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_server: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    logs = with_server(sub.add_parser("logs", help="a task's output (stdout, stderr, log lines)"))
    logs.add_argument("task", help="the task id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the task ends")
    logs.add_argument("--json", action="store_true", help="the output events as JSON Lines")
    logs.set_defaults(func=cmd_logs)
    files = with_server(sub.add_parser("files", help="files a task announced; or download one"))
    files.add_argument("task", help="the task id")
    files.add_argument("path", nargs="?", help="download this file (relative to the task's directory)")
    files.add_argument("-o", "--output", help="where to write it; - for stdout (default: its name, here)")
    files.add_argument("--json", action="store_true", help="the list as JSON")
    files.set_defaults(func=cmd_files)
