"""``cmbtask sessions|tasks|approvals|approve|reject|cancel``: act on tasks from a shell.

Each command is one or two REST calls with the same bearer token as the API;
tables for people, ``--json`` (the API's own objects) for scripts, and the
exit codes of :mod:`.client_errors`. Ids may be shortened to their first 8+
characters: the command finds the one id of yours that starts with them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from .shell_output import FULL_ID_CHARS, by_prefix, client, get_json, line, show_json, stamp, table
from .terminal_client import raise_for

__all__ = ["add_shell_commands", "session_ids", "task_id_of"]

Adder = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def session_ids(http: httpx.Client) -> Iterator[str]:
    offset = 0
    while True:
        page = get_json(http, "/api/sessions", limit=200, offset=offset)
        yield from (item["id"] for item in page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return


def _session_id_of(http: httpx.Client, given: str) -> str:
    return by_prefix(given, session_ids(http), "session")


def task_id_of(http: httpx.Client, given: str) -> str:
    if len(given) >= FULL_ID_CHARS:
        return given
    # No listing of all tasks: a short task id costs one request per session.
    tasks = (task["id"] for sid in session_ids(http) for task in get_json(http, f"/api/sessions/{sid}/tasks"))
    return by_prefix(given, tasks, "task")


def cmd_sessions(args: argparse.Namespace) -> int:
    with client(args) as http:
        page = get_json(
            http,
            "/api/sessions",
            status=args.status,
            mode=args.mode,
            q=args.title,
            limit=args.limit,
            offset=args.offset,
        )
    if args.json:
        show_json(page)
        return 0
    rows = [
        (s["id"], s["status"], s.get("phase"), s["mode"], stamp(s["updated_at"]), s["title"])
        for s in page["items"]
    ]
    table(("ID", "STATUS", "PHASE", "MODE", "UPDATED", "TITLE"), rows)
    shown = len(page["items"])
    if page["total"] > page["offset"] + shown:
        line(f"({shown} of {page['total']}; more with --offset {page['offset'] + shown})")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    with client(args) as http:
        tasks = get_json(http, f"/api/sessions/{_session_id_of(http, args.session)}/tasks")
    if args.json:
        show_json(tasks)
        return 0
    rows = [
        (
            t["id"],
            t["phase"],
            t["engine"],
            t["mode"],
            stamp(t["created_at"]),
            stamp(t["finished_at"]),
            t["reason"],
        )
        for t in tasks
    ]
    table(("ID", "PHASE", "ENGINE", "MODE", "CREATED", "FINISHED", "REASON"), rows)
    return 0


def _approvals(http: httpx.Client, status: str | None, session: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(http, "/api/approvals", status=status, session_id=session)["items"]
    return items


def cmd_approvals(args: argparse.Namespace) -> int:
    status = None if args.status == "all" else args.status
    with client(args) as http:
        session = _session_id_of(http, args.session) if args.session else None
        items = _approvals(http, status, session)
    if args.json:
        show_json(items)
        return 0
    rows = [
        (
            a["id"],
            a["status"],
            a["kind"],
            a["task_id"],
            "/".join(a["options"]),
            stamp(a["created_at"]),
            a["prompt"],
        )
        for a in items
    ]
    table(("ID", "STATUS", "KIND", "TASK", "OPTIONS", "CREATED", "PROMPT"), rows)
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    """approve or reject; the first decision wins, a later one exits 4."""
    with client(args) as http:
        given = args.approval
        approval_id = by_prefix(given, (a["id"] for a in _approvals(http, None, None)), "approval")
        body = {"decision": args.decision, "text": args.text}
        response = http.post(f"/api/approvals/{approval_id}/resolve", json=body)
        raise_for(response)
        view = response.json()
    if args.json:
        show_json(view)
    else:
        line(f"{view['status']} {view['id']} (task {view['task_id']})")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with client(args) as http:
        response = http.post(f"/api/tasks/{task_id_of(http, args.task)}/cancel")
        raise_for(response)
        task = response.json()
    if args.json:
        show_json(task)
    else:
        line(f"task {task['id']} is {task['phase']}")
    return 0


def add_shell_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], with_server: Adder) -> None:
    def command(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        parser = with_server(sub.add_parser(name, help=help_text))
        parser.add_argument("--json", action="store_true", help="the API's JSON instead of a table")
        parser.set_defaults(func=func)
        return parser

    sessions = command("sessions", "your sessions, newest first", cmd_sessions)
    sessions.add_argument("--status", choices=["active", "suspended", "completed", "expired"])
    sessions.add_argument("--mode", help="only sessions of this mode")
    sessions.add_argument("--title", help="only sessions whose title contains this")
    sessions.add_argument(
        "--limit", type=int, default=50, help="at most this many, 1-200 (default: %(default)s)"
    )
    sessions.add_argument("--offset", type=int, default=0, help="skip this many (default: %(default)s)")
    command("tasks", "the tasks of a session", cmd_tasks).add_argument("session", help="the session id")
    approvals = command("approvals", "approvals waiting for you (or, with --status, others)", cmd_approvals)
    approvals.add_argument(
        "--status",
        default="pending",
        choices=["pending", "approved", "rejected", "modified", "answered", "expired", "cancelled", "all"],
        help="(default: %(default)s)",
    )
    approvals.add_argument("--session", help="only this session's approvals")
    for decision in ("approve", "reject"):
        resolve = command(decision, f"{decision} a pending approval", cmd_resolve)
        resolve.add_argument("approval", help="the approval id (from `cmbtask approvals`)")
        resolve.add_argument("--text", help="a comment sent with the decision")
        resolve.set_defaults(decision=decision)
    command("cancel", "cancel a task that has not ended", cmd_cancel).add_argument("task", help="the task id")
