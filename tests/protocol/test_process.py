"""The runner process contract: one exit code per ending, each final event
mapped to its own code, and names that both sides read from here."""

from __future__ import annotations

import cmbtask_protocol
from cmbtask_protocol import FINAL_EVENT_PHASES, RunnerExit


def test_every_final_event_has_its_own_exit_code() -> None:
    codes = {RunnerExit.for_final_event(event) for event in FINAL_EVENT_PHASES}
    assert codes == {RunnerExit.SUCCEEDED, RunnerExit.FAILED, RunnerExit.CANCELLED, RunnerExit.TIMED_OUT}
    assert RunnerExit.for_final_event("task.succeeded") == 0


def test_exit_codes_are_distinct_and_described() -> None:
    values = [code.value for code in RunnerExit]
    assert len(set(values)) == len(values)
    assert all(code.meaning for code in RunnerExit)


def test_environment_names_are_exported_once() -> None:
    names = [cmbtask_protocol.ENV_TASK_ID, cmbtask_protocol.ENV_GATEWAY_URL, cmbtask_protocol.ENV_TASK_TOKEN]
    assert all(name.startswith("CMBTASK_") for name in names)
    assert cmbtask_protocol.EXIT_FILE == "exit.json"
