"""``scripts/up.sh --cmbagent [PROFILE]``: it builds the profile's venv (here a
stand-in for scripts/cmbagent.sh, so nothing is downloaded), runs the local
runners on that venv's python, and says which key to set when none is."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY")


@pytest.fixture
def builder(tmp_path: Path) -> Path:
    """A venv builder that records the profile it was asked for and prints a python."""
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    script = tmp_path / "cmbagent.sh"
    script.write_text(
        f'#!/usr/bin/env bash\necho "$CMBTASK_CMBAGENT_PROFILE" > {tmp_path}/profile\n'
        f'echo "building..."\necho {python}\n'
    )
    return script


def _up(builder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith("CMBTASK_")}
    base.update(CMBTASK_SKIP_SETUP="1", CMBTASK_UP_DRY_RUN="1", CMBTASK_CMBAGENT_SH=str(builder), **env)
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "up.sh"), *args], env=base, capture_output=True, text=True, timeout=60
    )


def _runner_command(out: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith("CMBTASK_RUNNER_COMMAND="))
    value = line.split("=", 1)[1]
    return json.loads(value) if value else []


def test_cmbagent_flag_runs_the_runners_on_the_profile_venv(builder: Path) -> None:
    done = _up(builder, "--cmbagent", "--port", "9000")
    assert done.returncode == 0, done.stderr
    assert (builder.parent / "profile").read_text().strip() == "mars"  # the default profile
    python = str(builder.parent / "venv" / "bin" / "python")
    assert _runner_command(done.stdout) == [python, "-m", "cmbtask_runner"]
    assert done.stdout.strip().endswith("cmbtask up --port 9000")  # the rest goes to cmbtask up
    # no key: it says which variable to set, and still starts
    assert "export OPENAI_API_KEY=" in done.stderr and "demo engine" in done.stderr


def test_a_named_profile_and_a_key(builder: Path) -> None:
    done = _up(builder, "--cmbagent", "post30", OPENAI_API_KEY="sk-test")
    assert done.returncode == 0, done.stderr
    assert (builder.parent / "profile").read_text().strip() == "post30"
    assert _runner_command(done.stdout)[0].endswith("/venv/bin/python")
    assert "no LLM provider key" not in done.stderr
    # the key in this environment is the gateway's own: here it reaches the runners
    assert "CMBTASK_PROVIDER_KEYS_FALLBACK=true" in done.stdout.splitlines()


def test_an_unknown_profile_is_refused(builder: Path) -> None:
    done = _up(builder, "--cmbagent", "post99")
    assert done.returncode == 2
    assert "unknown CMBAgent profile 'post99'" in done.stderr
    assert not (builder.parent / "profile").exists()


def test_without_the_flag_the_runners_keep_the_default(builder: Path) -> None:
    done = _up(builder, "--port", "9000")
    assert done.returncode == 0, done.stderr
    assert _runner_command(done.stdout) == []
    assert "CMBTASK_PROVIDER_KEYS_FALLBACK=" in done.stdout.splitlines()  # left to the gateway's default
    assert not (builder.parent / "profile").exists()
