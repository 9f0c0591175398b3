"""Static checks as tests: lint, strict typing and the import contract.

They run the venv's own tools as subprocesses, so a fresh clone that passes
the suite also passes the project's style gates (including ruff's T20: no
``print`` in library code).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGES = ["protocol", "gateway", "runner", "operator", "migrations"]


def _run(*argv: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    tool = BIN / argv[0]
    if not tool.exists():
        pytest.fail(f"{argv[0]} is not installed next to {sys.executable}: pip install -e '.[dev]'")
    return subprocess.run(
        [str(tool), *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def test_ruff_check_passes_on_the_packages() -> None:
    result = _run("ruff", "check", "--output-format", "concise", *PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_forbids_print_in_library_code() -> None:
    # The lint above is only worth something while T20 stays selected.
    result = _run("ruff", "check", "--select", "T20", "--output-format", "concise", *PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr
    config = (ROOT / "pyproject.toml").read_text()
    assert '"T20"' in config


def test_ruff_format_is_clean_on_the_packages() -> None:
    result = _run("ruff", "format", "--check", *PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes_on_all_four_packages() -> None:
    packages = [f"{folder}/cmbtask_{folder}" for folder in ("protocol", "gateway", "runner", "operator")]
    result = _run("mypy", "--strict", *packages)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_components_import_only_protocol() -> None:
    result = _run("lint-imports", timeout_s=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
