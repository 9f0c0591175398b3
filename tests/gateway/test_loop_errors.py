"""A background loop's failures: one traceback when a kind of failure starts,
a count while it repeats, one line when the loop recovers."""

from __future__ import annotations

from cmbtask_gateway.loop_errors import REMIND_EVERY, LoopErrors
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs


def _outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def test_an_outage_is_one_traceback_then_counted_then_one_recovery_line() -> None:
    errors = LoopErrors("dispatch.loop_error")
    with capture_logs() as logs:
        for _ in range(5):
            errors.failed(_outage())
        errors.succeeded()
        errors.succeeded()
    assert [entry["event"] for entry in logs] == ["dispatch.loop_error", "dispatch.loop_error.recovered"]
    assert isinstance(logs[0]["exc_info"], OperationalError) and logs[0]["log_level"] == "error"
    assert logs[1]["repeats"] == 4 and logs[1]["failure"] == "OperationalError"


def test_a_different_failure_is_logged_in_full_at_once() -> None:
    errors = LoopErrors("sweeper.error")
    with capture_logs() as logs:
        errors.failed(_outage())
        errors.failed(ValueError("a bug"))
        errors.failed(_outage())
    assert [type(entry["exc_info"]).__name__ for entry in logs] == [
        "OperationalError",
        "ValueError",
        "OperationalError",
    ]


def test_a_failure_that_lasts_is_recalled_without_its_traceback() -> None:
    errors = LoopErrors("tokens.check_failed")
    with capture_logs() as logs:
        for _ in range(2 * REMIND_EVERY + 1):
            errors.failed(_outage())
    assert [entry["event"] for entry in logs] == ["tokens.check_failed"] + [
        "tokens.check_failed.still_failing"
    ] * 2
    assert [entry["repeats"] for entry in logs[1:]] == [REMIND_EVERY, 2 * REMIND_EVERY]
    assert all("exc_info" not in entry for entry in logs[1:])
