"""Users' own provider keys, end to end: stored through the CLI (stdin) and REST,
handed to that user's runner only, and found nowhere else.

A recognisable key is planted; a ``script`` task proves it got the key by
printing its sha256, never the key. Then every event, task view, API answer,
file of the gateway's data directory (its log, the runners' logs, SQLite) and
every database row outside the sealed column is searched for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from tests.runner.gateway_tasks import FINAL, LOCAL, kill_runners_under
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.slow

PLANTED = "sk-planted-4f1c9e7a2b8d6035ce11aa90"
GATEWAY_KEY = "sk-gateway-own-key-77d0c3b1e5"
GATEWAY_ENV = {**LOCAL, "CMBTASK_AUTH_MODE": "token", "OPENAI_API_KEY": GATEWAY_KEY}

KEY_PROBE = textwrap.dedent(
    """
    import hashlib, os
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        value = os.environ.get(name)
        print(name, "absent" if value is None else hashlib.sha256(value.encode()).hexdigest())
    """
)


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _cli(
    gateway: GatewayProcess, token: str, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CMBTASK_URL": gateway.url, "CMBTASK_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "cmbtask_gateway.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _run_probe(gateway: GatewayProcess, token: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
        session = (await http.post("/api/sessions", json={"title": "keys"})).json()["id"]
        body = {"engine": "script", "params": {"code": KEY_PROBE}}
        response = await http.post(f"/api/sessions/{session}/tasks", json=body)
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]
        deadline = time.monotonic() + 90
        while (task := (await http.get(f"/api/tasks/{task_id}")).json())["phase"] not in FINAL:
            assert time.monotonic() < deadline, f"task still {task['phase']}"
            await asyncio.sleep(0.2)
        page = await http.get(f"/api/sessions/{session}/events", params={"after": 0, "limit": 5000})
        return task, page.json()["items"]


def _printed(events: list[dict[str, Any]]) -> dict[str, str]:
    lines = "".join(e["data"]["text"] for e in events if e["type"] == "output").splitlines()
    return dict(line.split(" ", 1) for line in lines if line.startswith(("OPENAI_", "ANTHROPIC_")))


def _database_text(database_url: str) -> str:
    """Every row of every table as text, the sealed key column left out."""
    engine = create_engine(database_url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg2"))
    chunks: list[str] = []
    try:
        with engine.connect() as db:
            for table in inspect(engine).get_table_names():
                columns = [c["name"] for c in inspect(engine).get_columns(table) if c["name"] != "ciphertext"]
                quoted = ", ".join(f'"{c}"' for c in columns)
                chunks.extend(str(tuple(row)) for row in db.execute(text(f'SELECT {quoted} FROM "{table}"')))
            sealed = db.execute(text("SELECT ciphertext FROM provider_keys")).scalars().all()
    finally:
        engine.dispose()
    assert sealed and all(PLANTED.encode() not in bytes(value) for value in sealed)
    return "\n".join(chunks)


def _files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


async def test_a_users_key_reaches_only_their_runner_and_leaks_nowhere(
    shared_gateway: GatewayProcess,
) -> None:
    gateway = shared_gateway
    alice, bob = gateway.create_token("alice"), gateway.create_token("bob")

    stored = _cli(gateway, alice, "keys", "set", "openai", stdin=PLANTED + "\n")
    assert stored.returncode == 0, stored.stderr
    listed = _cli(gateway, alice, "keys", "list")
    assert "openai" in listed.stdout and "OPENAI_API_KEY" in listed.stdout
    assert PLANTED not in listed.stdout + listed.stderr + stored.stdout + stored.stderr

    (task_a, events_a), (task_b, events_b) = await asyncio.gather(
        _run_probe(gateway, alice), _run_probe(gateway, bob)
    )
    with gateway.client(alice) as http_alice, gateway.client(bob) as http_bob:
        answers = [
            http_alice.get("/api/keys").text,
            http_alice.get(f"/api/tasks/{task_a['id']}").text,
            http_alice.get(f"/api/sessions/{task_a['session_id']}").text,
            http_bob.get("/api/keys").text,
        ]
    assert task_a["phase"] == task_b["phase"] == "succeeded", (task_a["reason"], task_b["reason"])
    # Alice's runner has her key; Bob's has none: the gateway's own key stays out
    # (the fallback is off by default), and no provider she did not store appears.
    assert _printed(events_a) == {"OPENAI_API_KEY": _sha(PLANTED), "ANTHROPIC_API_KEY": "absent"}
    assert _printed(events_b) == {"OPENAI_API_KEY": "absent", "ANTHROPIC_API_KEY": "absent"}

    for needle in (PLANTED, GATEWAY_KEY):
        assert needle not in str(events_a) + str(events_b) + "".join(answers)
        assert _files_containing(gateway.data_dir, needle) == []
        assert needle not in _database_text(gateway.database_url)
        if gateway.database_url.startswith("sqlite"):  # and the raw file, WAL included
            database = Path(gateway.database_url.split("///", 1)[1])
            assert _files_containing(database.parent, needle) == []
            assert await asyncio.to_thread(database.is_file)
    assert (gateway.data_dir / "gateway.log").stat().st_size > 0
    assert list(gateway.data_dir.glob("tasks/*/runner.out"))
    kill_runners_under(gateway.data_dir)


def test_keys_rest_routes_never_echo_a_key(shared_gateway: GatewayProcess) -> None:
    token = shared_gateway.create_token("carol")
    with shared_gateway.client(token) as http:
        assert http.get("/api/keys").json()["items"] == []
        assert http.get("/api/keys").json()["gateway_fallback"] is False
        put = http.put("/api/keys/anthropic", json={"value": PLANTED})
        assert put.status_code == 200 and PLANTED not in put.text
        assert put.json()["env_var"] == "ANTHROPIC_API_KEY"
        again = http.put("/api/keys/anthropic", json={"value": PLANTED + "2"})
        assert again.status_code == 200
        assert [item["provider"] for item in http.get("/api/keys").json()["items"]] == ["anthropic"]

        bad = http.put("/api/keys/anthropic", json={"value": PLANTED + " with a space"})
        assert bad.status_code == 422 and PLANTED not in bad.text
        assert bad.json()["code"] == "invalid_request"
        unknown = http.put("/api/keys/acme", json={"value": PLANTED})
        assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_provider"
        assert PLANTED not in unknown.text
        assert http.put("/api/keys/Not_A_Provider!", json={"value": PLANTED}).status_code == 422

        assert http.delete("/api/keys/anthropic").status_code == 204
        missing = http.delete("/api/keys/anthropic")
        assert missing.status_code == 404 and missing.json()["code"] == "no_key"
        assert http.get("/api/keys").json()["items"] == []
    with shared_gateway.client() as anonymous:
        assert anonymous.get("/api/keys").status_code == 401


def test_keys_set_reads_stdin_not_argv(shared_gateway: GatewayProcess) -> None:
    token = shared_gateway.create_token("dave")
    empty = _cli(shared_gateway, token, "keys", "set", "gemini", stdin="")
    assert empty.returncode == 1 and "no key on standard input" in empty.stderr
    # a key given as an argument is not a key: argparse refuses the extra word
    refused = _cli(shared_gateway, token, "keys", "set", "gemini", PLANTED)
    assert refused.returncode != 0
    assert _cli(shared_gateway, token, "keys", "list").stdout.startswith("no keys stored")
    assert _cli(shared_gateway, token, "keys", "delete").returncode == 1
