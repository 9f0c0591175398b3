"""Pod observations mapped to CmbTask status patches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cmbtask_operator import OperatorSettings, read_pod, status_patch
from cmbtask_operator.handlers import refusal
from cmbtask_operator.statuses import PodReport, final_patch, set_condition
from cmbtask_protocol import CmbTaskSpec, ConditionStatus, ConditionType, RunnerExit, TaskPhase, signal_reason

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def pod(phase: str, state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    containers = [{"name": "runner", "state": state}] if state is not None else []
    return {
        "spec": {"nodeName": "node-1"},
        "status": {"phase": phase, "containerStatuses": containers, **status},
    }


def conditions(patch: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in patch["conditions"]}


def test_pending_then_running() -> None:
    starting = read_pod(pod("Pending", {"waiting": {"reason": "ContainerCreating"}}))
    assert starting == PodReport(TaskPhase.STARTING, scheduled=True)
    patch = status_patch(starting, {}, NOW)
    assert patch is not None and patch["phase"] == "starting"
    assert conditions(patch) == {"PodScheduled": "True"}

    running = read_pod(pod("Running", {"running": {"startedAt": "2026-11-27T11:59:00Z"}}))
    assert running is not None and running.phase is TaskPhase.RUNNING
    patch = status_patch(running, {"phase": "starting", "conditions": patch["conditions"]}, NOW)
    assert patch is not None
    assert patch["phase"] == "running"
    assert patch["startTime"] == "2026-11-27T11:59:00Z"
    assert conditions(patch) == {"PodScheduled": "True", "Running": "True"}


def test_succeeded_with_exit_code_zero() -> None:
    report = read_pod(pod("Succeeded", {"terminated": {"exitCode": 0, "reason": "Completed"}}))
    patch = status_patch(report, {"phase": "running"}, NOW)  # type: ignore[arg-type]
    assert patch is not None
    assert patch["phase"] == "succeeded"
    assert patch["exitCode"] == 0
    assert patch["finishTime"] == "2026-11-27T12:00:00Z"
    assert conditions(patch)["Succeeded"] == "True"
    assert conditions(patch)["Running"] == "False"


def test_non_zero_exit_is_failed_with_the_code() -> None:
    report = read_pod(pod("Failed", {"terminated": {"exitCode": 7, "reason": "Error"}}))
    patch = status_patch(report, {"phase": "running"}, NOW)  # type: ignore[arg-type]
    assert patch is not None
    assert (patch["phase"], patch["exitCode"], patch["reason"]) == ("failed", 7, "Error")
    assert "code 7" in patch["message"]
    assert conditions(patch)["Failed"] == "True"


def test_oom_killed_is_failed_and_says_so() -> None:
    report = read_pod(pod("Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
    assert report is not None
    assert (report.phase, report.reason, report.exit_code) == (TaskPhase.FAILED, "OOMKilled", 137)
    assert "memory limit" in (report.message or "")


def test_image_pull_failure_fails_fast() -> None:
    state = {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:1"'}}
    report = read_pod(pod("Pending", state))
    assert report is not None and report.fail_fast
    patch = status_patch(report, {"phase": "starting"}, NOW)
    assert patch is not None
    assert (patch["phase"], patch["reason"]) == ("failed", "ImagePullBackOff")
    assert "nope:1" in patch["message"]


def test_deadline_exceeded_is_timed_out() -> None:
    report = read_pod(pod("Failed", {"terminated": {"exitCode": 143}}, reason="DeadlineExceeded"))
    patch = status_patch(report, {"phase": "running"}, NOW)  # type: ignore[arg-type]
    assert patch is not None and patch["phase"] == "timed_out"
    assert patch["reason"] == "DeadlineExceeded"


def test_final_phase_is_never_overwritten() -> None:
    report = read_pod(pod("Failed", {"terminated": {"exitCode": 1}}))
    assert status_patch(report, {"phase": "cancelled"}, NOW) is None  # type: ignore[arg-type]
    assert status_patch(report, {"phase": "succeeded"}, NOW) is None  # type: ignore[arg-type]


def test_phase_never_moves_backwards_and_repeats_patch_nothing() -> None:
    pending = read_pod(pod("Pending", {"waiting": {"reason": "ContainerCreating"}}))
    running = read_pod(pod("Running", {"running": {"startedAt": "2026-11-27T11:59:00Z"}}))
    assert pending is not None and running is not None
    patch = status_patch(pending, {"phase": "running"}, NOW)
    assert patch is not None and "phase" not in patch
    # the gateway's waiting_approval survives a Running replay
    current = status_patch(running, {}, NOW)
    assert current is not None
    waiting = {**current, "phase": "waiting_approval"}
    again = status_patch(running, waiting, NOW + timedelta(seconds=5))
    assert again is None


def test_unknown_pod_phase_says_nothing() -> None:
    assert read_pod({"status": {"phase": "Unknown"}}) is None
    assert read_pod({"status": {}}) is None


def test_condition_transition_time_moves_only_on_change() -> None:
    first = set_condition([], ConditionType.RUNNING, ConditionStatus.TRUE, NOW)
    same = set_condition(first, ConditionType.RUNNING, ConditionStatus.TRUE, NOW + timedelta(minutes=1))
    flipped = set_condition(same, ConditionType.RUNNING, ConditionStatus.FALSE, NOW + timedelta(minutes=2))
    assert same[0]["lastTransitionTime"] == "2026-11-27T12:00:00Z"
    assert flipped[0]["lastTransitionTime"] == "2026-11-27T12:02:00Z"
    assert len(flipped) == 1


def test_cancel_patch() -> None:
    patch = final_patch(
        {"phase": "running", "approval": {"id": "a1", "state": "pending"}},
        TaskPhase.CANCELLED,
        "Cancelled",
        "x",
        NOW,
    )
    assert patch["phase"] == "cancelled"
    # status.approval is the gateway's to write (it alone knows how the approval ended)
    assert "approval" not in patch
    conditions = {c["type"]: c["status"] for c in patch["conditions"]}
    assert conditions["AwaitingApproval"] == "False"
    assert {c["type"]: c["status"] for c in patch["conditions"]}["Failed"] == "True"


def test_refusal_of_unknown_engine_and_bad_params() -> None:
    settings = OperatorSettings(engines=["demo", "script"], standalone=True, priority=1)
    assert refusal(CmbTaskSpec(engine="demo", params={"steps": 2}), settings) is None
    unknown = refusal(CmbTaskSpec(engine="quantum"), settings)
    assert unknown is not None and unknown[0] == "UnknownEngine" and "quantum" in unknown[1]
    bad = refusal(CmbTaskSpec(engine="demo", params={"steps": -1}), settings)
    assert bad is not None and bad[0] == "InvalidParams"
    assert refusal(CmbTaskSpec(engine="script", params={}), settings) is not None


def test_runner_exit_codes_for_cancelled_and_timed_out() -> None:
    cancelled = read_pod(pod("Failed", {"terminated": {"exitCode": 2, "reason": "Error"}}))
    timed_out = read_pod(pod("Failed", {"terminated": {"exitCode": 3, "reason": "Error"}}))
    failed = read_pod(pod("Failed", {"terminated": {"exitCode": 4, "reason": "Error"}}))
    assert cancelled is not None and cancelled.phase is TaskPhase.CANCELLED
    assert timed_out is not None and timed_out.phase is TaskPhase.TIMED_OUT
    assert failed is not None and failed.phase is TaskPhase.FAILED and failed.exit_code == 4


def test_a_runner_terminated_unasked_fails_its_task_as_pod_deleted() -> None:
    # the kubelet's SIGTERM for a deleted pod or a drained node: no cancel asked for it
    terminated = {"terminated": {"exitCode": int(RunnerExit.TERMINATED), "reason": "Error"}}
    report = read_pod(pod("Failed", terminated))
    patch = status_patch(report, {"phase": "running", "podName": "p"}, NOW)  # type: ignore[arg-type]
    assert patch is not None
    assert (patch["phase"], patch["reason"], patch["exitCode"]) == ("failed", "PodDeleted", 6)
    assert patch["message"] == signal_reason("SIGTERM")
    # a cancel marks the task final before the operator deletes the pod: nothing changes
    assert status_patch(report, {"phase": "cancelled"}, NOW) is None  # type: ignore[arg-type]
