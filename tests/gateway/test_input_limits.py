"""Every input at its limit is taken, one past it refused with a message:
titles, prompts, params, request lines, headers, and a body that arrives too
slowly (a raw socket that dribbles bytes).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from cmbtask_protocol import MAX_PARAMS_BYTES, MAX_PROMPT_CHARS, MAX_TITLE_CHARS

from tests.support.gateway import GatewayProcess

BODY_TIMEOUT_S = 2.0
GATEWAY_ENV = {"CMBTASK_AUTH_MODE": "proxy", "CMBTASK_REQUEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}


@pytest.fixture
def client(shared_gateway: GatewayProcess) -> Iterator[httpx.Client]:
    user = f"user-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=shared_gateway.url, headers={"X-Forwarded-User": user}, timeout=30) as http:
        yield http


def _refused(response: httpx.Response, status: int, code: str, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code and all(word in body["message"] for word in words), body
    return body


def _session(client: httpx.Client) -> str:
    response = client.post("/api/sessions", json={})
    assert response.status_code == 201, response.text
    session_id: str = response.json()["id"]
    return session_id


def test_title_at_the_limit_and_one_over(client: httpx.Client) -> None:
    for title in ("t" * MAX_TITLE_CHARS, "é" * MAX_TITLE_CHARS):  # characters, not bytes
        created = client.post("/api/sessions", json={"title": title})
        assert created.status_code == 201 and created.json()["title"] == title
    _refused(
        client.post("/api/sessions", json={"title": "t" * (MAX_TITLE_CHARS + 1)}),
        422,
        "invalid_request",
        "title",
    )
    sid = _session(client)
    renamed = client.patch(f"/api/sessions/{sid}", json={"version": 1, "title": "r" * MAX_TITLE_CHARS})
    assert renamed.status_code == 200
    over = client.patch(f"/api/sessions/{sid}", json={"version": 2, "title": "r" * (MAX_TITLE_CHARS + 1)})
    _refused(over, 422, "invalid_request", "title")


def test_prompt_at_the_limit_and_one_over(client: httpx.Client) -> None:
    sid = _session(client)
    url = f"/api/sessions/{sid}/tasks"
    accepted = client.post(url, json={"engine": "demo", "prompt": "p" * MAX_PROMPT_CHARS})
    assert accepted.status_code == 201 and len(accepted.json()["prompt"]) == MAX_PROMPT_CHARS
    over = client.post(url, json={"engine": "demo", "prompt": "p" * (MAX_PROMPT_CHARS + 1)})
    _refused(over, 422, "invalid_request", "prompt")


def _params_of_size(size: int) -> dict[str, str]:
    """Params whose compact UTF-8 JSON is exactly ``size`` bytes."""
    overhead = len(json.dumps({"blob": ""}, separators=(",", ":")))
    params = {"blob": "é" * ((size - overhead) // 2) + "x" * ((size - overhead) % 2)}
    assert len(json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()) == size
    return params


def test_params_at_the_limit_and_one_byte_over(client: httpx.Client) -> None:
    sid = _session(client)
    url = f"/api/sessions/{sid}/tasks"
    # An engine whose params the runner checks, so any object goes at the gateway.
    accepted = client.post(url, json={"engine": "cmbagent", "params": _params_of_size(MAX_PARAMS_BYTES)})
    assert accepted.status_code == 201, accepted.text[:300]
    over = client.post(url, json={"engine": "cmbagent", "params": _params_of_size(MAX_PARAMS_BYTES + 1)})
    _refused(over, 413, "too_large", str(MAX_PARAMS_BYTES + 1), str(MAX_PARAMS_BYTES))
    assert len(client.get(url).json()) == 1


def _raw_request(port: int, request: bytes, timeout_s: float = 15.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        return _read_response(sock)


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_long_request_lines_and_headers(shared_gateway: GatewayProcess) -> None:
    port = shared_gateway.port
    at_limit = b"GET /healthz?q=" + b"a" * (8 * 1024 - len("/healthz") - 3) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _raw_request(port, at_limit).startswith(b"HTTP/1.1 200")
    too_long = _raw_request(port, b"GET /healthz?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert too_long.startswith(b"HTTP/1.1 414") and b'"uri_too_long"' in too_long
    # Past what uvicorn's parser reads at all (64 KiB): a 400 of its own, no crash.
    beyond = _raw_request(port, b"GET /healthz?q=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert beyond.startswith(b"HTTP/1.1 400")

    with httpx.Client(base_url=shared_gateway.url, timeout=30) as http:
        big = http.get("/healthz", headers={"X-Big": "b" * (33 * 1024)})
        _refused(big, 431, "headers_too_large", "100 headers")
        many = http.get("/healthz", headers={f"X-H{n}": "v" for n in range(120)})
        _refused(many, 431, "headers_too_large")
        assert http.get("/healthz", headers={"X-Fine": "f" * (16 * 1024)}).status_code == 200
        assert http.get("/healthz").status_code == 200


async def test_socket_handshakes_are_held_to_the_same_limits(shared_gateway: GatewayProcess) -> None:
    # (A single header line over 8 KiB never reaches the gateway: the
    # WebSocket layer refuses it first, with a 431 of its own.)
    url = f"{shared_gateway.ws_url}/ws/sessions/{uuid.uuid4()}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(
            url, additional_headers={f"X-H{n}": "v" for n in range(110)}, open_timeout=15
        )
    assert refused.value.response.status_code == 403


def test_a_body_dribbled_too_slowly_is_cut_off(shared_gateway: GatewayProcess) -> None:
    body = json.dumps({"title": "slow"}).encode()
    head = (
        b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nX-Forwarded-User: dribbler\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", shared_gateway.port), timeout=15) as sock:
        sock.sendall(head)
        started = time.monotonic()
        sent = 0
        sock.settimeout(0.4)
        response = b""
        while sent < len(body) - 1 and time.monotonic() - started < 15:  # never the last byte
            sock.sendall(body[sent : sent + 1])
            sent += 1
            try:
                response = sock.recv(65536)
                break
            except TimeoutError:
                continue
        sock.settimeout(15)
        response += _read_response(sock) if b"}" not in response else b""
        elapsed = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 408"), response[:300]
    assert b'"request_timeout"' in response and b"2 s" in response
    assert BODY_TIMEOUT_S - 0.5 <= elapsed <= BODY_TIMEOUT_S + 5, elapsed
    with httpx.Client(base_url=shared_gateway.url, headers={"X-Forwarded-User": "dribbler"}) as http:
        assert http.get("/api/sessions").json()["total"] == 0  # nothing was stored


def test_text_no_database_stores_is_refused_on_every_backend(client: httpx.Client) -> None:
    """PostgreSQL keeps no U+0000 in a text column: such fields refuse it (422,
    and the schema says so), paths and queries too; free-form objects are
    stored as JSON, which keeps it, and come back intact."""
    sid = _session(client)
    _refused(client.post("/api/sessions", json={"title": "a\u0000b"}), 422, "invalid_request", "title")
    prompt = {"engine": "demo", "prompt": "a\u0000b"}
    _refused(client.post(f"/api/sessions/{sid}/tasks", json=prompt), 422, "invalid_request", "prompt")
    _refused(client.get("/api/sessions", params={"q": "a\u0000"}), 422, "invalid_request", "NUL")
    _refused(client.get("/api/sessions/a%00b"), 422, "invalid_request", "NUL")
    deep = {"engine": "cmbagent", "params": {"k\u0000": ["ok", {"v": "x\u0000y"}]}}
    created = client.post(f"/api/sessions/{sid}/tasks", json=deep)
    assert created.status_code == 201, created.text
    assert client.get(f"/api/tasks/{created.json()['id']}").json()["params"] == deep["params"]
    patched = client.patch(f"/api/sessions/{sid}", json={"version": 1, "context": {"note": "x\u0000"}})
    assert patched.status_code == 200 and patched.json()["context"] == {"note": "x\u0000"}
    # A lone surrogate is valid JSON but no UTF-8: no database stores it.
    lone = b'{"engine": "cmbagent", "params": {"k": "a\\ud800b"}}'
    headers = {"Content-Type": "application/json"}
    response = client.post(f"/api/sessions/{sid}/tasks", content=lone, headers=headers)
    _refused(response, 422, "invalid_request", "surrogate")
    assert len(client.get(f"/api/sessions/{sid}/tasks").json()) == 1
