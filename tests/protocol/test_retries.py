"""Which runner endings are retried, and after how long."""

from __future__ import annotations

import pytest
from cmbtask_protocol import (
    MAX_RETRY_DELAY_S,
    RunnerExit,
    TaskCreate,
    pod_died,
    retry_delay_s,
    runner_died,
)
from pydantic import ValidationError


def test_the_backoff_doubles_from_the_first_retry_and_is_capped() -> None:
    assert [retry_delay_s(5, attempt) for attempt in (2, 3, 4, 5)] == [5, 10, 20, 40]
    assert retry_delay_s(0, 3) == 0
    assert retry_delay_s(3000, 6) == MAX_RETRY_DELAY_S


@pytest.mark.parametrize(
    "code", [None, -9, -15, 137, RunnerExit.LINK_LOST, RunnerExit.FINAL_NOT_ACKED, RunnerExit.TERMINATED]
)
def test_a_runner_that_ended_unreported_died(code: int | None) -> None:
    assert runner_died(code)


def test_a_runner_started_without_its_configuration_did_not_die() -> None:
    assert not runner_died(RunnerExit.USAGE)


def test_only_the_pod_endings_of_its_environment_count() -> None:
    assert pod_died("OOMKilled", 137) and pod_died("Evicted", None) and pod_died("PodDeleted", 6)
    for reason in ("ErrImagePull", "InvalidSpec", "MissingSecret", "DeadlineExceeded", "Cancelled", None):
        assert not pod_died(reason, None), reason
    assert not pod_died("Error", RunnerExit.USAGE)


def test_retries_are_bounded_at_submit() -> None:
    assert TaskCreate().retries == 0
    assert TaskCreate.model_validate({"retries": 5, "retry_backoff_s": 0}).retries == 5
    for bad in ({"retries": 6}, {"retries": -1}, {"retries": "2"}, {"retry_backoff_s": -1}):
        with pytest.raises(ValidationError):
            TaskCreate.model_validate(bad)
