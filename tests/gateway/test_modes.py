"""``/api/modes`` and task submission tell the truth about what the runners can run.

Real gateways: one whose local executor's runner command is a tiny fake
runner printing an engine description (the ``cmbagent`` engine available,
without ``copilot``), one given the description by ``CMBTASK_ENGINES_JSON``
(the ``cmbagent`` engine without an API key). The catalog's fallbacks (a
runner command that fails, hangs or prints nonsense) are checked in-process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cmbtask_gateway.catalog import EngineCatalog, describe_runner_engines, mode_views
from cmbtask_protocol import MODES, EngineDescription, EnginesDescription

from tests.support.gateway import GatewayProcess

NO_KEY = "no LLM API key is configured for the runner: set one of OPENAI_API_KEY"
NO_COPILOT = "copilot is not part of this cmbagent release"


def _description(*, cmbagent_available: bool) -> EnginesDescription:
    label = {"loaded": True, "available": True, "modes": None}
    return EnginesDescription(
        engines={
            "cmbagent": EngineDescription(
                name="cmbagent",
                loaded=True,
                available=cmbagent_available,
                unavailable_reason=None if cmbagent_available else NO_KEY,
                modes=["control", "hitl-interactive", "one-shot", "planning-control"],
                resume_modes=["planning-control"],
                unavailable_modes={"copilot": NO_COPILOT},
                # what the engine says of the modes only a key holds back
                needs_keys={}
                if cmbagent_available
                else {m: ["OPENAI_API_KEY"] for m in ("one-shot", "planning-control")},
                library_version="0.0.1.post30",
            ),
            "demo": EngineDescription(name="demo", **label),
            "script": EngineDescription(name="script", **label),
        }
    )


def _fake_runner(path: Path, description: EnginesDescription) -> Path:
    """A runner command that only knows how to describe its engines."""
    path.write_text(
        textwrap.dedent(
            f"""
            import sys
            if "--describe-engines" not in sys.argv:
                sys.exit(64)
            sys.stdout.write({description.model_dump_json()!r} + "\\n")
            """
        )
    )
    return path


@pytest.fixture(scope="module")
def probing_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("modes-local")
    runner = _fake_runner(root / "fake_runner.py", _description(cmbagent_available=True))
    process = GatewayProcess(
        root / "data",
        f"sqlite+aiosqlite:///{root / 'cmbtask.db'}",
        CMBTASK_EXECUTOR="local",
        CMBTASK_RUNNER_COMMAND=json.dumps([sys.executable, str(runner)]),
    )
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def keyless_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("modes-json")
    process = GatewayProcess(
        root / "data",
        f"sqlite+aiosqlite:///{root / 'cmbtask.db'}",
        CMBTASK_EXECUTOR="none",
        CMBTASK_ENGINES_JSON=_description(cmbagent_available=False).model_dump_json(),
    )
    try:
        yield process.start()
    finally:
        process.stop()


def _modes(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    with gateway.client() as http:
        response = http.get("/api/modes")
    assert response.status_code == 200, response.text
    return {mode["name"]: mode for mode in response.json()}


def _submit(gateway: GatewayProcess, engine: str, mode: str, **extra: Any) -> httpx.Response:
    with gateway.client() as http:
        created = http.post("/api/sessions", json={"title": f"{engine} {mode}", "mode": mode})
        assert created.status_code == 201, created.text
        body = {"engine": engine, "mode": mode, "prompt": "Fit the spectra", **extra}
        return http.post(f"/api/sessions/{created.json()['id']}/tasks", json=body)


def test_modes_follow_the_runner_description(probing_gateway: GatewayProcess) -> None:
    modes = _modes(probing_gateway)
    assert set(modes) == {mode.name for mode in MODES}
    for name in ("one-shot", "planning-control", "control", "hitl-interactive"):
        assert modes[name]["available"] is True, modes[name]
        assert modes[name]["unavailable_reason"] is None
        assert modes[name]["engines"] == ["cmbagent", "demo", "script"]
    copilot = modes["copilot"]
    assert copilot["available"] is False and copilot["unavailable_reason"] == NO_COPILOT
    assert copilot["engines"] == ["demo", "script"]  # still usable as a label
    ideas = modes["idea-generation"]
    assert ideas["available"] is False
    assert "has no mode 'idea-generation'" in ideas["unavailable_reason"]
    # resume: what the installed engine does, not the static table (which says control resumes)
    assert modes["planning-control"]["supports_resume"] is True
    assert modes["control"]["supports_resume"] is False
    assert modes["one-shot"]["supports_resume"] is False


def test_unsupported_mode_is_refused_at_once(probing_gateway: GatewayProcess) -> None:
    response = _submit(probing_gateway, "cmbagent", "copilot")
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "engine_unavailable"
    assert NO_COPILOT in error["message"]
    assert error["detail"] == {"engine": "cmbagent", "mode": "copilot", "reason": NO_COPILOT}


def test_supported_mode_is_accepted(probing_gateway: GatewayProcess) -> None:
    response = _submit(probing_gateway, "cmbagent", "planning-control")
    assert response.status_code == 201, response.text
    assert response.json()["engine"] == "cmbagent"


def test_engine_the_runner_lacks_is_unknown(probing_gateway: GatewayProcess) -> None:
    # installed in the gateway's environment or not: the runner's word counts
    response = _submit(probing_gateway, "nosuchengine", "one-shot")
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_engine"


def test_without_key_no_mode_is_available(keyless_gateway: GatewayProcess) -> None:
    modes = _modes(keyless_gateway)
    for name in ("one-shot", "planning-control", "hitl-interactive"):
        assert modes[name]["available"] is False
        assert modes[name]["unavailable_reason"] == NO_KEY
        assert modes[name]["engines"] == ["demo", "script"]
    # the release's missing mode is the more useful reason for that mode
    assert modes["copilot"]["unavailable_reason"] == NO_COPILOT
    assert modes["planning-control"]["supports_resume"] is True
    # the picker can say which key to set, and only where a key is all that is missing
    assert modes["one-shot"]["needs_keys"] == ["OPENAI_API_KEY"]
    assert modes["copilot"]["needs_keys"] == []


def test_without_key_cmbagent_task_fails_at_once(keyless_gateway: GatewayProcess) -> None:
    started = time.monotonic()
    response = _submit(keyless_gateway, "cmbagent", "one-shot")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "engine_unavailable"
    assert NO_KEY in response.json()["message"]
    assert time.monotonic() - started < 10


def test_label_engines_run_any_mode(keyless_gateway: GatewayProcess) -> None:
    response = _submit(keyless_gateway, "demo", "copilot", params={"steps": 1})
    assert response.status_code == 201, response.text


# ---- the catalog's fallbacks, in-process --------------------------------------------------


async def test_describe_reads_a_runner_command(tmp_path: Path) -> None:
    runner = _fake_runner(tmp_path / "runner.py", _description(cmbagent_available=True))
    described = await describe_runner_engines([sys.executable, str(runner)], {}, timeout_s=30)
    assert described == _description(cmbagent_available=True)


@pytest.mark.parametrize(
    "source",
    [
        "import sys; sys.exit(3)",
        "print('not json')",
        'print(\'{"v": 1, "engines": {}}\')',
        "import time; time.sleep(60)",
    ],
    ids=["exit-code", "not-json", "no-engines", "hangs"],
)
async def test_describe_failure_means_unknown(tmp_path: Path, source: str) -> None:
    script = tmp_path / "runner.py"
    script.write_text(source)
    started = time.monotonic()
    assert await describe_runner_engines([sys.executable, str(script)], {}, timeout_s=2) is None
    assert time.monotonic() - started < 10


async def test_describe_missing_command_means_unknown(tmp_path: Path) -> None:
    assert await describe_runner_engines([str(tmp_path / "no-such-runner")], {}, timeout_s=5) is None


async def test_catalog_asks_again_and_keeps_the_last_good_answer(tmp_path: Path) -> None:
    """Installing the extra (here: a new description) shows without a restart;
    a re-ask that fails keeps what was known instead of forgetting it."""
    runner = tmp_path / "runner.py"
    keyless, keyed = _description(cmbagent_available=False), _description(cmbagent_available=True)
    _fake_runner(runner, keyless)
    catalog = EngineCatalog()
    catalog.start_probe([sys.executable, str(runner)], {}, timeout_s=30, refresh_s=0.2)
    try:
        assert await catalog.get() == keyless
        _fake_runner(runner, keyed)
        assert await _eventually(catalog, keyed) == keyed
        runner.write_text("import sys; sys.exit(3)")
        await asyncio.sleep(0.3)
        for _ in range(5):  # several failed re-asks in a row
            assert await catalog.get() == keyed
            await asyncio.sleep(0.3)
    finally:
        await catalog.close()


async def _eventually(catalog: EngineCatalog, wanted: EnginesDescription) -> EnginesDescription | None:
    deadline = time.monotonic() + 20
    got = await catalog.get()
    while got != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        got = await catalog.get()
    return got


def test_unknown_description_keeps_every_mode_available() -> None:
    views = mode_views(MODES, None, ["demo", "script"])
    assert all(view.available for view in views)
    assert all(view.engines == ["demo", "script"] for view in views)
    assert [view.supports_resume for view in views] == [mode.supports_resume for mode in MODES]
