"""The task lifecycle walked edge by edge: every legal change applied, every
other one refused with an error logged and nothing changed."""

from __future__ import annotations

import itertools

import pytest
from cmbtask_gateway.db.models import Session, Task
from cmbtask_gateway.services import lifecycle
from cmbtask_protocol import CANCEL_TIMEOUT, EventType, TaskPhase, signal_reason
from structlog.testing import capture_logs

Q, S, R, W = TaskPhase.QUEUED, TaskPhase.STARTING, TaskPhase.RUNNING, TaskPhase.WAITING_APPROVAL
ENDS = [TaskPhase.SUCCEEDED, TaskPhase.FAILED, TaskPhase.CANCELLED, TaskPhase.TIMED_OUT]

#: The design's graph, written out independently of the module under test:
#: queued → starting → running ⇄ waiting_approval → final; queued → running for
#: a runner someone else started; any unfinished task may end; a task whose
#: runner died goes back to queued for its next attempt (a retry).
LEGAL = {
    (Q, S),
    (Q, R),
    (S, R),
    (S, W),
    (R, W),
    (W, R),
    *((source, end) for source in (Q, S, R, W) for end in ENDS),
    *((source, Q) for source in (S, R, W)),
}
ALL_PAIRS = list(itertools.product(TaskPhase, TaskPhase))


def _task(phase: TaskPhase) -> tuple[Task, Session]:
    return Task(id="t1", session_id="s1", phase=phase.value), Session(id="s1", phase=phase.value)


@pytest.mark.parametrize(("source", "target"), sorted(LEGAL))
def test_every_legal_edge_is_applied(source: TaskPhase, target: TaskPhase) -> None:
    task, session = _task(source)
    with capture_logs() as logs:
        assert lifecycle.move(task, session, target)
    assert task.phase == target.value and session.phase == target.value
    assert not [entry for entry in logs if entry["log_level"] == "error"]
    if target is R:
        assert task.started_at is not None
    if target.is_final:
        assert task.finished_at is not None


@pytest.mark.parametrize(("source", "target"), [pair for pair in ALL_PAIRS if pair not in LEGAL])
def test_every_other_change_is_refused_and_logged(source: TaskPhase, target: TaskPhase) -> None:
    task, session = _task(source)
    with capture_logs() as logs:
        assert not lifecycle.move(task, session, target)
    assert task.phase == source.value and session.phase == source.value
    assert task.finished_at is None and task.started_at is None
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert [(e["event"], e["source"], e["target"]) for e in errors] == [
        ("task.illegal_transition", source.value, target.value)
    ]


def test_the_module_graph_is_the_design_graph() -> None:
    assert {pair for pair in ALL_PAIRS if lifecycle.allowed(*pair)} == LEGAL


def test_each_final_phase_has_its_event() -> None:
    assert {lifecycle.FINAL_EVENT[end] for end in ENDS} == {
        EventType.TASK_SUCCEEDED,
        EventType.TASK_FAILED,
        EventType.TASK_CANCELLED,
        EventType.TASK_TIMED_OUT,
    }


@pytest.mark.parametrize(
    ("cancel_reason", "expected"),
    [
        (None, (TaskPhase.FAILED, None)),
        ("cancelled by alice", (TaskPhase.CANCELLED, "cancelled by alice")),
        ("", (TaskPhase.CANCELLED, "cancelled")),
        (CANCEL_TIMEOUT, (TaskPhase.TIMED_OUT, "timed out")),
    ],
)
def test_a_stopped_runner_ends_as_the_cancel_asked_or_failed(
    cancel_reason: str | None, expected: tuple[TaskPhase, str | None]
) -> None:
    task, _ = _task(R)
    task.cancel_requested, task.cancel_reason = cancel_reason is not None, cancel_reason
    assert lifecycle.ending_when_stopped(task) == expected


def test_a_signalled_runner_fails_unless_a_cancel_was_asked_for() -> None:
    data = {"reason": signal_reason("SIGTERM"), "signal": "SIGTERM"}
    task, _ = _task(R)
    task.cancel_requested = False
    assert lifecycle.runner_ending(task, TaskPhase.FAILED, data) == (TaskPhase.FAILED, data)
    task.cancel_requested, task.cancel_reason = True, "cancelled by alice"
    phase, ended = lifecycle.runner_ending(task, TaskPhase.FAILED, data)
    assert phase is TaskPhase.CANCELLED and ended == {**data, "reason": "cancelled by alice"}
    # a runner's own failure is its own, a cancel requested or not
    plain = {"reason": "step 2 failed"}
    assert lifecycle.runner_ending(task, TaskPhase.FAILED, plain) == (TaskPhase.FAILED, plain)
