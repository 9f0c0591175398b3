"""Token lifecycle: ``cmbtask token create|list|revoke`` against a running
gateway. A revoked or expired token is refused on REST and the sockets it
opened are closed with 4401, also on another replica of a PostgreSQL
deployment; tokens at rest are only hashes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import websockets
from cmbtask_gateway.auth import Authenticator, Identity
from cmbtask_gateway.db.engine import make_engine, make_sessionmaker
from cmbtask_gateway.db.migrate import upgrade
from cmbtask_gateway.errors import Unauthorized
from cmbtask_gateway.services.tokens import create_token, revoke_token
from cmbtask_gateway.settings import Settings
from sqlalchemy import Engine, create_engine, text

from tests.support.gateway import GatewayProcess

GATEWAY_ENV = {"CMBTASK_AUTH_MODE": "token"}
#: generous: the check runs every 2 s by default, but the machine may be busy
CLOSE_WITHIN_S = 20.0


def cmbtask_token(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **gateway.env, "CMBTASK_DATABASE_URL": gateway.database_url}
    command = [sys.executable, "-m", "cmbtask_gateway.cli", "token", *args]
    command += ["--data-dir", str(gateway.data_dir)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def new_token(gateway: GatewayProcess, user: str, *options: str) -> tuple[str, dict[str, Any]]:
    """A token and its ``token list --json`` entry."""
    created = cmbtask_token(gateway, "create", user, *options)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    listed = [entry for entry in token_list(gateway, user) if entry["id"] in created.stderr]
    assert len(listed) == 1, (created.stderr, listed)
    return token, listed[0]


def token_list(gateway: GatewayProcess, *args: str) -> list[dict[str, Any]]:
    listed = cmbtask_token(gateway, "list", *args, "--json")
    assert listed.returncode == 0, listed.stderr
    entries: list[dict[str, Any]] = json.loads(listed.stdout)
    return entries


def revoke(gateway: GatewayProcess, token_id: str) -> None:
    revoked = cmbtask_token(gateway, "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert token_id in revoked.stdout


def fresh_user(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def sync_engine(shared_gateway: GatewayProcess) -> Iterator[Engine]:
    """The gateway's database through a blocking driver, to look at it directly."""
    url = shared_gateway.database_url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg2")
    engine = create_engine(url)
    yield engine
    engine.dispose()


class OpenSocket:
    """A session socket that has said hello, and how it ended."""

    def __init__(self, gateway: GatewayProcess, token: str) -> None:
        self.gateway, self.token = gateway, token
        self.ws: Any = None
        self.session_id = ""

    async def open(self) -> OpenSocket:
        with self.gateway.client(self.token) as http:
            session = http.post("/api/sessions", json={"title": "watched"})
            assert session.status_code == 201, session.text
        self.session_id = session.json()["id"]
        url = f"{self.gateway.ws_url}/ws/sessions/{self.session_id}?token={self.token}"
        self.ws = await websockets.connect(url, open_timeout=15)
        assert json.loads(await asyncio.wait_for(self.ws.recv(), 15))["type"] == "ws.hello"
        return self

    async def closed_within(self, timeout_s: float) -> tuple[int, str, float]:
        """Read until the server closes: (code, reason, seconds waited)."""
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(timeout_s):
                while True:
                    await self.ws.recv()
        assert closed.value.rcvd is not None, "closed without a close frame"
        return closed.value.rcvd.code, closed.value.rcvd.reason, time.monotonic() - started

    async def still_serves(self) -> None:
        await self.ws.send(json.dumps({"type": "ping", "id": "p"}))
        async with asyncio.timeout(15):
            while json.loads(await self.ws.recv())["type"] != "ws.pong":
                pass

    async def close(self) -> None:
        await self.ws.close()


def refused_within(gateway: GatewayProcess, token: str, timeout_s: float) -> tuple[str, float]:
    """Poll ``/api/me`` until the token is refused: (error code, seconds)."""
    started = time.monotonic()
    with gateway.client(token) as http:
        while True:
            answer = http.get("/api/me")
            if answer.status_code == 401:
                return answer.json()["code"], time.monotonic() - started
            assert answer.status_code == 200, answer.text
            assert time.monotonic() - started < timeout_s, "the token kept working"
            time.sleep(0.2)


def test_list_shows_tokens_but_never_a_secret(shared_gateway: GatewayProcess, sync_engine: Engine) -> None:
    user = fresh_user("erin")
    laptop, laptop_entry = new_token(shared_gateway, user, "--name", "laptop", "--expires-in", "30")
    ci, ci_entry = new_token(shared_gateway, user)
    assert laptop_entry["name"] == "laptop" and laptop_entry["status"] == "active"
    lifetime = datetime.fromisoformat(laptop_entry["expires_at"]) - datetime.fromisoformat(
        laptop_entry["created_at"]
    )
    assert lifetime.days == 30
    assert ci_entry["name"] is None and ci_entry["expires_at"] is None

    table = cmbtask_token(shared_gateway, "list", user)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "USER", "NAME", "CREATED", "EXPIRES", "STATUS"]
    assert sorted(row.split()[0] for row in rows) == sorted([laptop_entry["id"], ci_entry["id"]])
    everything = table.stdout + json.dumps(token_list(shared_gateway))
    assert laptop not in everything and ci not in everything and "cmbt_" not in everything
    assert {entry["user"] for entry in token_list(shared_gateway)} >= {user}

    # At rest: the hash, never the token.
    with sync_engine.connect() as connection:
        rows_at_rest = connection.execute(text("SELECT * FROM api_tokens")).all()
    dump = repr(rows_at_rest)
    assert laptop not in dump and ci not in dump
    assert hashlib.sha256(laptop.encode()).hexdigest() in dump


def test_bad_token_commands_say_what_is_wrong(shared_gateway: GatewayProcess) -> None:
    for args, message in [
        (("revoke", "00000000-no-such-token"), "no token with id"),
        (("revoke", "abc"), "at least its first 8 characters"),
        (("create", "x", "--expires-in", "0"), "--expires-in is a number of days above 0"),
        (("create", "x", "--name", "n" * 101), "a token name is 1 to 100 characters"),
    ]:
        result = cmbtask_token(shared_gateway, *args)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert result.stdout == ""


async def test_a_revoked_token_is_refused_and_its_socket_closed(shared_gateway: GatewayProcess) -> None:
    user, other = fresh_user("frank"), fresh_user("grace")
    token, entry = new_token(shared_gateway, user)
    spare, _ = new_token(shared_gateway, user)
    others, _ = new_token(shared_gateway, other)
    doomed = await OpenSocket(shared_gateway, token).open()
    kept = await OpenSocket(shared_gateway, spare).open()
    bystander = await OpenSocket(shared_gateway, others).open()

    revoke(shared_gateway, entry["id"])
    code, _ = refused_within(shared_gateway, token, CLOSE_WITHIN_S)
    assert code == "revoked_token"
    close_code, reason, _ = await doomed.closed_within(CLOSE_WITHIN_S)
    assert (close_code, reason) == (4401, "token revoked")
    # Only that token: the same user's other token and other users carry on.
    await kept.still_serves()
    await bystander.still_serves()
    with shared_gateway.client(spare) as http:
        assert http.get("/api/me").json()["user"] == user
    assert [e["status"] for e in token_list(shared_gateway, user) if e["id"] == entry["id"]] == ["revoked"]
    # Nor can it open a new socket.
    url = f"{shared_gateway.ws_url}/ws/sessions/{doomed.session_id}?token={token}"
    async with websockets.connect(url, open_timeout=15) as again:
        with pytest.raises(websockets.ConnectionClosed) as refused:
            await asyncio.wait_for(again.recv(), 15)
    assert refused.value.rcvd is not None and refused.value.rcvd.code == 4401
    assert refused.value.rcvd.reason == "token revoked"
    for socket in (kept, bystander):
        await socket.close()


async def test_an_expired_token_is_refused_and_its_socket_closed(
    shared_gateway: GatewayProcess, sync_engine: Engine
) -> None:
    # A real expiry a few seconds ahead: refused by REST as soon as it passes,
    # without waiting for the cache to age.
    user = fresh_user("heidi")
    short, short_entry = new_token(shared_gateway, user, "--expires-in", str(6 / 86400))
    with shared_gateway.client(short) as http:
        first = http.get("/api/me")
    expires_at = datetime.fromisoformat(short_entry["expires_at"])
    if first.status_code == 200:  # on a busy machine the token may be gone already
        assert first.json()["user"] == user
    await asyncio.sleep(max(0.0, (expires_at - datetime.now(expires_at.tzinfo)).total_seconds()) + 0.1)
    with shared_gateway.client(short) as http:
        refused = http.get("/api/me")
    assert refused.status_code == 401 and refused.json()["code"] == "expired_token"

    # A socket outlives nothing: move a longer-lived token's expiry into the
    # past, as the clock would, and its open socket is closed.
    token, entry = new_token(shared_gateway, user, "--expires-in", "1")
    socket = await OpenSocket(shared_gateway, token).open()
    with sync_engine.begin() as connection:
        connection.execute(
            text("UPDATE api_tokens SET expires_at = :past WHERE id = :id"),
            {"past": datetime.fromisoformat(entry["created_at"]), "id": entry["id"]},
        )
    close_code, reason, _ = await socket.closed_within(CLOSE_WITHIN_S)
    assert (close_code, reason) == (4401, "token expired")
    code, _ = refused_within(shared_gateway, token, CLOSE_WITHIN_S)
    assert code == "expired_token"


@pytest.fixture
def replicas(database_url: str, gateway_factory: Callable[..., GatewayProcess]) -> list[GatewayProcess]:
    if database_url.startswith("sqlite"):
        pytest.skip("replicas share a PostgreSQL database; SQLite is the single-process default")
    return [gateway_factory(**GATEWAY_ENV), gateway_factory(**GATEWAY_ENV)]


async def test_revocation_reaches_sockets_on_every_replica(replicas: list[GatewayProcess]) -> None:
    first, second = replicas
    token, entry = new_token(first, "ivan")
    keeper, _ = new_token(first, "judy")
    sockets = [await OpenSocket(replica, token).open() for replica in replicas]
    bystanders = [await OpenSocket(replica, keeper).open() for replica in replicas]
    for replica in replicas:  # both have the token in their cache now
        with replica.client(token) as http:
            assert http.get("/api/me").json()["user"] == "ivan"

    revoke(second, entry["id"])
    closes = await asyncio.gather(*(socket.closed_within(CLOSE_WITHIN_S) for socket in sockets))
    assert [(code, reason) for code, reason, _ in closes] == [(4401, "token revoked")] * 2
    for replica in replicas:
        assert refused_within(replica, token, CLOSE_WITHIN_S)[0] == "revoked_token"
    for socket in bystanders:
        await socket.still_serves()
        await socket.close()


async def test_the_positive_cache_lasts_only_its_ttl(database_url: str, tmp_path: Path) -> None:
    """Without the socket checker, a revoked token still stops working once
    its cache entry is ``auth_cache_ttl_s`` old."""
    await asyncio.to_thread(upgrade, database_url)
    settings = Settings(auth_mode="token", database_url=database_url, data_dir=tmp_path, auth_cache_ttl_s=5)
    engine = make_engine(database_url)
    try:
        factory = make_sessionmaker(engine)
        auth = Authenticator(settings, factory)
        info, token = await create_token(factory, "kim")
        assert await auth.identify(token, None) == Identity("kim", info.id, None)
        await revoke_token(factory, info.id)
        cached_at = time.monotonic()
        assert (await auth.identify(token, None)).user == "kim", "answered from the cache"
        await asyncio.sleep(max(0.0, cached_at + 5.1 - time.monotonic()))
        with pytest.raises(Unauthorized) as refused:
            await auth.identify(token, None)
        assert refused.value.code == "revoked_token"
    finally:
        await engine.dispose()
