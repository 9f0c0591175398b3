"""Sealed keys and the environment a runner gets, without a gateway process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cmbtask_gateway.crypto import KeyBox, SealedValueError
from cmbtask_gateway.executors.base import LaunchRequest
from cmbtask_gateway.executors.local import LocalExecutor

KEY = "sk-user-key-0123456789abcdef"


def test_sealed_keys_open_only_for_their_owner_provider_and_secret() -> None:
    box = KeyBox(b"gateway secret")
    sealed = box.seal("alice", "openai", KEY)
    assert KEY.encode() not in sealed
    assert box.seal("alice", "openai", KEY) != sealed  # a fresh nonce every time
    assert box.open("alice", "openai", sealed) == KEY
    for user, provider in (("bob", "openai"), ("alice", "anthropic")):
        with pytest.raises(SealedValueError) as error:
            box.open(user, provider, sealed)
        assert KEY not in str(error.value)
    with pytest.raises(SealedValueError, match="set it again"):
        KeyBox(b"another secret").open("alice", "openai", sealed)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealedValueError):
        box.open("alice", "openai", tampered)
    assert "secret" not in repr(box).replace("<secret>", "")


def _request(**keys: str) -> LaunchRequest:
    return LaunchRequest(
        task_id="t1", session_id="s1", owner="alice", engine="script", mode="one-shot",
        gateway_url="ws://127.0.0.1:1", token="runner-token", provider_env=keys,
    )  # fmt: skip


def test_a_launch_request_never_shows_its_keys() -> None:
    assert KEY not in repr(_request(OPENAI_API_KEY=KEY))


@pytest.mark.parametrize("fallback", [False, True])
def test_the_gateways_own_keys_reach_runners_only_when_the_admin_opts_in(
    fallback: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-gateway-openai")
    monkeypatch.setenv("GEMINI_API_KEY", "sk-gateway-gemini")
    executor = LocalExecutor(
        tmp_path, [sys.executable, "-m", "cmbtask_runner"], provider_keys_fallback=fallback
    )
    env = executor._env(_request(OPENAI_API_KEY=KEY), tmp_path)
    assert env["OPENAI_API_KEY"] == KEY  # the user's own key wins either way
    assert env.get("GEMINI_API_KEY") == ("sk-gateway-gemini" if fallback else None)
    assert ("GEMINI_API_KEY" in executor._base_env()) is fallback  # the fork server's too
