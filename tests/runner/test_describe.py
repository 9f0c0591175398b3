"""``python -m cmbtask_runner --describe-engines``: what the installed engines can run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
from cmbtask_protocol import EnginesDescription
from cmbtask_runner.describe import describe_engine, describe_engines
from cmbtask_runner.engines.cmbagent import library

KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY")


class _BrokenEngine:
    name = "broken"

    def __init__(self) -> None:
        raise RuntimeError("cannot start")


class _BadDescription:
    name = "odd"

    def describe(self) -> dict[str, str]:
        return {"not": "a description"}


def _point(name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=target, group="cmbtask.engines")


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


def test_every_entry_point_is_described() -> None:
    described = describe_engines()
    registered = {point.name for point in entry_points(group="cmbtask.engines")}
    assert set(described.engines) == registered
    assert {"demo", "script", "cmbagent"} <= registered
    for name in ("demo", "script"):
        engine = described.engines[name]
        assert engine.loaded and engine.available and engine.modes is None
        assert engine.unavailable_reason is None


def test_cmbagent_modes_and_resume_come_from_its_table(no_keys: None) -> None:
    cmbagent = describe_engines().engines["cmbagent"]
    assert cmbagent.loaded
    assert cmbagent.modes == ["control", "hitl-interactive", "one-shot", "planning-control"]
    assert cmbagent.resume_modes == ["planning-control"]
    assert "0.0.1.post30" in cmbagent.unavailable_modes["copilot"]
    assert "copilot" not in cmbagent.modes


def test_cmbagent_without_library_says_so(no_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(library, "is_installed", lambda: False)
    cmbagent = describe_engines().engines["cmbagent"]
    assert not cmbagent.available
    assert cmbagent.unavailable_reason is not None
    assert "extra is not installed" in cmbagent.unavailable_reason


def test_cmbagent_without_key_says_which_to_set(no_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(library, "is_installed", lambda: True)
    cmbagent = describe_engines().engines["cmbagent"]
    assert not cmbagent.available
    assert cmbagent.unavailable_reason is not None
    assert "OPENAI_API_KEY" in cmbagent.unavailable_reason


def test_cmbagent_with_library_and_key_is_available(no_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(library, "is_installed", lambda: True)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    cmbagent = describe_engines().engines["cmbagent"]
    assert cmbagent.available
    assert cmbagent.unavailable_reason is None


def test_an_engine_that_fails_to_load_is_reported_not_fatal() -> None:
    broken = describe_engine(_point("broken", f"{__name__}:_BrokenEngine"))
    assert not broken.loaded and not broken.available
    assert broken.unavailable_reason is not None
    assert "cannot start" in broken.unavailable_reason
    missing = describe_engine(_point("missing", "no_such_module_for_cmbtask:Engine"))
    assert not missing.loaded
    assert missing.unavailable_reason is not None
    assert "ModuleNotFoundError" in missing.unavailable_reason


def test_a_malformed_self_description_makes_the_engine_unavailable() -> None:
    odd = describe_engine(_point("odd", f"{__name__}:_BadDescription"))
    assert odd.loaded and not odd.available
    assert odd.unavailable_reason is not None
    assert "malformed" in odd.unavailable_reason


def test_command_prints_one_json_document_and_touches_nothing(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CMBTASK_")}
    env.update({key: "" for key in KEYS})
    # A work-dir variable that must not be used: describing creates no directory.
    env["CMBTASK_WORK_DIR"] = str(tmp_path / "work")
    done = subprocess.run(
        [sys.executable, "-m", "cmbtask_runner", "--describe-engines"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1
    described = EnginesDescription.model_validate(json.loads(done.stdout))
    assert described.engines["demo"].available
    cmbagent = described.engines["cmbagent"]
    assert not cmbagent.available
    assert cmbagent.unavailable_reason is not None
    assert list(tmp_path.iterdir()) == []
