"""The shell client against a real gateway with real runners: ``cmbtask
sessions|tasks|approvals|approve|reject|cancel|logs|files`` run as
subprocesses, asserted on their tables, JSON and exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.runner.gateway_tasks import LOCAL
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.slow

NO_SUCH = "00000000-0000-4000-8000-000000000000"

WRITES_A_FILE = textwrap.dedent(
    """
    from cmbtask_runner import sdk
    data = "".join(f"row {n}\\n" for n in range(1000))
    with open("table.txt", "w") as fh:
        fh.write(data)
    sdk.emit("file.created", {"path": "table.txt", "size": len(data), "mime": "text/plain"})
    print("wrote the table")
    """
)


def _cli(gateway: GatewayProcess, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "CMBTASK_TOKEN"}
    env["CMBTASK_URL"] = gateway.url
    if token:
        env["CMBTASK_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "cmbtask_gateway.cli", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ok(gateway: GatewayProcess, *args: str, token: str | None = None) -> str:
    done = _cli(gateway, *args, token=token)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def _json(gateway: GatewayProcess, *args: str, token: str | None = None) -> Any:
    return json.loads(_ok(gateway, *args, "--json", token=token))


def _submit(
    gateway: GatewayProcess, *params: str, engine: str = "demo", token: str | None = None
) -> tuple[str, str]:
    flags = [arg for param in params for arg in ("--param", param)]
    out = _ok(gateway, "submit", "shell test", "--engine", engine, *flags, "--no-watch", token=token)
    found = re.search(r"session (\S+)\s+task (\S+)", out)
    assert found, out
    return found.group(1), found.group(2)


def _pending_approval(gateway: GatewayProcess, session: str, token: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while not (items := _json(gateway, "approvals", "--session", session, token=token)):
        assert time.monotonic() < deadline, "no approval was requested"
        time.sleep(0.3)
    approval: dict[str, Any] = items[0]
    return approval


def _rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.strip().splitlines()]


@pytest.fixture
def local_gateway(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    return gateway_factory(**LOCAL, CMBTASK_AUTH_MODE="none")


def test_a_plan_approved_from_the_shell_then_its_logs_and_tables(local_gateway: GatewayProcess) -> None:
    gateway = local_gateway
    session, task = _submit(gateway, "approve_plan=true", "steps=2", "step_delay_s=0", "lines_per_step=3")
    approval = _pending_approval(gateway, session)
    assert approval["task_id"] == task and approval["status"] == "pending"
    table = _rows(_ok(gateway, "approvals"))
    assert table[0][:3] == ["ID", "STATUS", "KIND"] and [approval["id"], "pending", "plan"] == table[1][:3]

    # A plan review takes no text: refused, and the approval is still pending.
    with_text = _cli(gateway, "approve", approval["id"], "--text", "looks right")
    assert with_text.returncode == 1 and "takes no free text" in with_text.stderr, with_text
    # A short id (the first 8 characters) is enough; a second decision is a conflict.
    assert _ok(gateway, "approve", approval["id"][:8]) == f"approved {approval['id']} (task {task})\n"
    again = _cli(gateway, "reject", approval["id"])
    assert again.returncode == 4 and "already" in again.stderr, again

    logs = _ok(gateway, "logs", task, "--follow")
    assert f"[{task}] step 2/2 line 3/3" in logs.splitlines()
    assert len(re.findall(r"step [12]/2 line [123]/3", logs)) == 6
    events = [json.loads(line) for line in _ok(gateway, "logs", task, "--json").splitlines()]
    assert {event["type"] for event in events} == {"output"} and {e["task_id"] for e in events} == {task}
    assert len(re.findall(r"step [12]/2 line [123]/3", "".join(e["data"]["text"] for e in events))) == 6

    tasks = _rows(_ok(gateway, "tasks", session[:8]))
    assert tasks[0][:2] == ["ID", "PHASE"] and tasks[1][:3] == [task, "succeeded", "demo"]
    assert [item["status"] for item in _json(gateway, "approvals", "--status", "all")] == ["approved"]
    assert _rows(_ok(gateway, "approvals")) == [
        ["ID", "STATUS", "KIND", "TASK", "OPTIONS", "CREATED", "PROMPT"]
    ]
    assert _cli(gateway, "cancel", task).returncode == 4  # already finished


def test_sessions_filters_cancel_and_errors(local_gateway: GatewayProcess) -> None:
    gateway = local_gateway
    session, task = _submit(gateway, "steps=50", "step_delay_s=1")
    listed = _json(gateway, "sessions", "--title", "shell")
    assert [item["id"] for item in listed["items"]] == [session] and listed["total"] == 1
    assert _json(gateway, "sessions", "--title", "nothing like it")["items"] == []
    assert _json(gateway, "sessions", "--status", "suspended")["items"] == []
    table = _rows(_ok(gateway, "sessions", "--limit", "1"))
    assert table[0] == ["ID", "STATUS", "PHASE", "MODE", "UPDATED", "TITLE"] and table[1][0] == session

    assert re.fullmatch(
        rf"task {task} is (queued|starting|running|cancelled)\n", _ok(gateway, "cancel", task[:8])
    )
    deadline = time.monotonic() + 30
    while _json(gateway, "tasks", session)[0]["phase"] != "cancelled":
        assert time.monotonic() < deadline, "the cancel did not end the task"
        time.sleep(0.3)
    assert _cli(gateway, "logs", task, "--follow").returncode == 0  # ends: the task has

    for args in (("logs", NO_SUCH), ("tasks", NO_SUCH), ("approve", NO_SUCH), ("cancel", "abc")):
        done = _cli(gateway, *args)
        assert done.returncode == 1 and "404" in done.stderr, (args, done)
    assert _cli(gateway, "approve").returncode == 2  # usage
    assert _cli(gateway, "sessions", "--limit", "0").returncode == 1  # the API refuses it (422)

    retried = _ok(gateway, "submit", "retried", "--retries", "2", "--retry-backoff", "1.5", "--no-watch")
    found = re.search(r"session (\S+)\s+task (\S+)", retried)
    assert found, retried
    [view] = _json(gateway, "tasks", found.group(1))
    assert (view["retries"], view["retry_backoff_s"], view["attempt"]) == (2, 1.5, 1)
    too_many = _cli(gateway, "submit", "too many", "--retries", "9", "--no-watch")
    assert too_many.returncode == 1 and "retries" in too_many.stderr, too_many


def test_files_listed_and_downloaded(local_gateway: GatewayProcess, tmp_path: Path) -> None:
    gateway = local_gateway
    _, task = _submit(gateway, f"code={json.dumps(WRITES_A_FILE)}", engine="script")
    assert "wrote the table" in _ok(gateway, "logs", task, "--follow")
    expected = "".join(f"row {n}\n" for n in range(1000))
    assert _json(gateway, "files", task) == [
        {"path": "table.txt", "size": len(expected), "mime": "text/plain"}
    ]
    assert _rows(_ok(gateway, "files", task)) == [
        ["PATH", "SIZE", "TYPE"],
        ["table.txt", f"{len(expected):,}", "text/plain"],
    ]
    target = tmp_path / "copy.txt"
    _ok(gateway, "files", task, "table.txt", "-o", str(target))
    assert target.read_text() == expected
    assert _ok(gateway, "files", task, "table.txt", "-o", "-") == expected
    missing = _cli(gateway, "files", task, "../gateway.log", "-o", str(tmp_path / "x"))
    assert missing.returncode == 1 and not (tmp_path / "x").exists()


def test_token_mode_refuses_bad_tokens_and_other_users_approvals(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gateway = gateway_factory(**LOCAL, CMBTASK_AUTH_MODE="token")
    alice, bob = gateway.create_token("alice"), gateway.create_token("bob")
    for token in (None, "not-a-token"):
        done = _cli(gateway, "sessions", token=token)
        assert done.returncode == 3 and "401" in done.stderr, done
    assert _cli(gateway, "approvals", "--token", "not-a-token", token=alice).returncode == 3  # the flag wins
    assert _json(gateway, "approvals", "--token", alice) == []
    session, task = _submit(gateway, "approve_plan=true", "steps=1", "step_delay_s=0", token=alice)
    approval = _pending_approval(gateway, session, token=alice)
    assert _json(gateway, "approvals", token=bob) == []
    assert _cli(gateway, "reject", approval["id"], token=bob).returncode == 1  # not bob's: not found
    resolved = _json(gateway, "reject", approval["id"], token=alice)
    assert resolved["status"] == "rejected" and resolved["resolved_by"] == "alice"
    _ok(gateway, "logs", task, "--follow", token=alice)
    assert _json(gateway, "tasks", session, token=alice)[0]["phase"] == "failed"


def test_logs_follow_rides_out_a_gateway_restart(local_gateway: GatewayProcess) -> None:
    gateway = local_gateway
    _, task = _submit(gateway, "steps=8", "step_delay_s=0.5", "lines_per_step=1")
    env = {**os.environ, "CMBTASK_URL": gateway.url}
    follow = subprocess.Popen(
        [sys.executable, "-m", "cmbtask_gateway.cli", "logs", task, "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        gateway.restart()  # SIGKILL, then up again on the same port and data
        out, err = follow.communicate(timeout=90)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert "retrying" in err
    # The runner reconnected to the new gateway and resent what was not acked:
    # every line, once, in order.
    assert re.findall(r"step (\d)/8 line 1/1", out) == [str(step) for step in range(1, 9)], out
    assert _json(gateway, "tasks", _json(gateway, "sessions")["items"][0]["id"])[0]["phase"] == "succeeded"
