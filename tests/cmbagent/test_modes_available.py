"""With the real library installed: the gateway asks the real runner which
modes it can run, ``/api/modes`` says so, and without an API key a
``cmbagent`` task is refused at submission, not minutes later in a runner."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess

from .conftest import DUMMY_KEY, local_gateway
from .releases import MAINTAINED

pytestmark = pytest.mark.cmbagent

RUNNABLE = (
    ("one-shot", "planning-control")
    if MAINTAINED
    else ("one-shot", "planning-control", "control", "hitl-interactive")
)
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY")


def _gateway(root: Path, **env: str) -> GatewayProcess:
    # the gateway's own keys are the runners' (an admin's opt-in; users' own: test_budget.py)
    return local_gateway(root / "data", CMBTASK_PROVIDER_KEYS_FALLBACK="true", **env)


@pytest.fixture
def without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # The gateway process inherits this environment, and its runners inherit the gateway's.
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


def _modes(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    with gateway.client() as http:
        response = http.get("/api/modes")
    assert response.status_code == 200, response.text
    return {mode["name"]: mode for mode in response.json()}


def test_modes_of_the_installed_release(tmp_path: Path, without_keys: None) -> None:
    process = _gateway(tmp_path, OPENAI_API_KEY=DUMMY_KEY).start(timeout_s=60)
    try:
        modes = _modes(process)
    finally:
        process.stop()
    for name in RUNNABLE:
        assert modes[name]["available"] is True, modes[name]
        assert "cmbagent" in modes[name]["engines"]
    # No supported release (0.0.1.post30, 0.0.1.post63, mars-cmbagent 2.2.5) has a copilot workflow.
    release = (
        "mars-cmbagent " + importlib.metadata.version("mars-cmbagent")
        if MAINTAINED
        else ("cmbagent " + importlib.metadata.version("cmbagent"))
    )
    assert modes["copilot"]["available"] is False
    assert modes["copilot"]["unavailable_reason"] == (
        f"copilot is not part of the installed {release} (it needs cmbagent.copilot)"
    )
    if MAINTAINED:
        assert modes["control"]["available"] is False
        assert (
            "not part of the installed mars-cmbagent 2.2.5 (it needs cmbagent.control)"
            in (modes["control"]["unavailable_reason"])
        )
    assert "cmbagent" not in modes["copilot"]["engines"]
    assert modes["planning-control"]["supports_resume"] is True
    assert modes["one-shot"]["supports_resume"] is False


def test_without_a_key_a_cmbagent_task_is_refused_at_once(tmp_path: Path, without_keys: None) -> None:
    assert not any(os.environ.get(key) for key in KEYS)
    process = _gateway(tmp_path).start(timeout_s=60)
    try:
        modes = _modes(process)
        with process.client() as http:
            session = http.post("/api/sessions", json={"title": "no key", "mode": "one-shot"}).json()
            response = http.post(
                f"/api/sessions/{session['id']}/tasks",
                json={"engine": "cmbagent", "mode": "one-shot", "prompt": "Fit the spectra"},
            )
    finally:
        process.stop()
    assert modes["one-shot"]["available"] is False
    assert "no LLM API key" in modes["one-shot"]["unavailable_reason"]
    assert modes["one-shot"]["engines"] == ["demo", "script"]
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "engine_unavailable"
    assert "OPENAI_API_KEY" in response.json()["message"]
