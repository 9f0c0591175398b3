"""The runner's start contract: the environment, with flags over it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cmbtask_protocol import ENV_GATEWAY_URL, ENV_TASK_ID, ENV_TASK_TOKEN, ENV_WORK_DIR
from cmbtask_runner.config import ConfigError, RunnerConfig


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        ENV_TASK_ID: "t-env",
        ENV_GATEWAY_URL: "http://127.0.0.1:1",
        ENV_TASK_TOKEN: "secret",
        ENV_WORK_DIR: str(tmp_path),
    }


def test_without_flags_everything_comes_from_the_environment(env: dict[str, str], tmp_path: Path) -> None:
    env["CMBTASK_FINAL_ACK_S"] = "12.5"
    config = RunnerConfig.load([], env)
    assert (config.task_id, config.gateway_url, config.token) == ("t-env", "http://127.0.0.1:1", "secret")
    assert config.work_dir == tmp_path.resolve()
    assert (config.give_up_s, config.final_ack_s, config.cancel_grace_s) == (900.0, 12.5, 3.0)


def test_flags_win_over_the_environment(env: dict[str, str], tmp_path: Path) -> None:
    other = tmp_path / "other"
    flags = ["--task-id", "t-flag", "--work-dir", str(other), "--cancel-grace-s", "0.5"]
    config = RunnerConfig.load(flags, env)
    assert (config.task_id, config.work_dir, config.cancel_grace_s) == ("t-flag", other.resolve(), 0.5)
    assert config.gateway_url == "http://127.0.0.1:1"  # not given as a flag: the environment's


def test_no_argv_reads_the_command_line(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["cmbtask-runner", "--task-id", "t-argv"])
    assert RunnerConfig.load(None, env).task_id == "t-argv"
    monkeypatch.setattr(sys, "argv", ["cmbtask-runner"])
    assert RunnerConfig.load(None, env).task_id == "t-env"


def test_what_is_missing_is_named(env: dict[str, str]) -> None:
    del env[ENV_TASK_TOKEN], env[ENV_TASK_ID]
    with pytest.raises(ConfigError, match=f"missing {ENV_TASK_ID}, {ENV_TASK_TOKEN}"):
        RunnerConfig.load([], env)


def test_a_duration_that_is_not_a_number_is_a_config_error(env: dict[str, str]) -> None:
    env["CMBTASK_LINK_GIVE_UP_S"] = "soon"
    with pytest.raises(ConfigError, match="CMBTASK_LINK_GIVE_UP_S must be a number of seconds, not 'soon'"):
        RunnerConfig.load([], env)
