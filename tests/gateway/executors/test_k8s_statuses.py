"""What the gateway writes into a CmbTask's status: its approval, always; the
phase only while the task runs, the AwaitingApproval condition until it ends."""

from __future__ import annotations

from typing import Any

from cmbtask_gateway.executors.k8s_statuses import stale_approval_ids, status_change
from cmbtask_protocol import TaskPhase


def approval(
    state: str = "pending", approval_id: str = "1a2b3c4d5e", by: str | None = None
) -> dict[str, Any]:
    return {
        "id": approval_id, "kind": "plan", "prompt": "ok?", "options": ["approve", "reject"], "state": state,
        "expiresAt": None, "resolvedBy": by, "summary": f"{state} plan/{approval_id[:8]}",
    }  # fmt: skip


def shown(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None}


def test_a_new_pending_approval_is_written_with_its_condition() -> None:
    change = status_change(
        {"phase": "running"}, {"phase": TaskPhase.WAITING_APPROVAL, "approval": approval()}
    )
    assert change["phase"] == "waiting_approval"
    assert change["approval"] == approval()  # None keys included: a merge patch removes old ones
    [condition] = change["conditions"]
    assert (condition["type"], condition["status"], condition["message"]) == (
        "AwaitingApproval",
        "True",
        "ok?",
    )


def test_an_approval_asked_before_the_operator_saw_the_pod_running_gets_its_condition() -> None:
    change = status_change(
        {"phase": "starting"}, {"phase": TaskPhase.WAITING_APPROVAL, "approval": approval()}
    )
    assert "phase" not in change  # starting → running is the operator's move
    [condition] = change["conditions"]
    assert (condition["type"], condition["status"]) == ("AwaitingApproval", "True")


def test_nothing_changes_when_the_status_already_shows_it() -> None:
    status = {
        "phase": "waiting_approval",
        "approval": shown(approval()),
        "conditions": [{"type": "AwaitingApproval", "status": "True", "lastTransitionTime": "x"}],
    }
    assert status_change(status, {"phase": TaskPhase.WAITING_APPROVAL, "approval": approval()}) == {}


def test_a_resolved_approval_replaces_the_pending_one_and_clears_the_condition() -> None:
    status = {
        "phase": "waiting_approval",
        "approval": shown(approval()),
        "conditions": [{"type": "AwaitingApproval", "status": "True", "lastTransitionTime": "x"}],
    }
    resolved = approval("approved", by="kubernetes:admin")
    change = status_change(status, {"phase": TaskPhase.RUNNING, "approval": resolved})
    assert change["phase"] == "running" and change["approval"]["resolvedBy"] == "kubernetes:admin"
    assert change["approval"]["summary"] == "approved plan/1a2b3c4d"
    assert change["conditions"][0]["status"] == "False"


def test_after_the_operators_final_phase_only_the_approval_is_written() -> None:
    ended = [{"type": "AwaitingApproval", "status": "False", "lastTransitionTime": "x"}]
    status = {"phase": "succeeded", "approval": shown(approval()), "conditions": ended}
    change = status_change(status, {"approval": approval("approved", by="kubernetes:admin")})
    assert set(change) == {"approval"}
    # and a phase the gateway believes never moves the operator's final one
    assert status_change({"phase": "succeeded"}, {"phase": TaskPhase.RUNNING}) == {}


def test_a_task_without_approvals_gets_no_condition() -> None:
    assert status_change({"phase": "running"}, {"phase": TaskPhase.RUNNING, "approval": None}) == {}


def test_stale_pending_approvals_are_found_only_outside_the_sync() -> None:
    seen = {
        "ended": {"status": {"phase": "succeeded", "approval": shown(approval())}},
        "synced": {"status": {"phase": "running", "approval": shown(approval(approval_id="ffffffff00"))}},
        "done": {"status": {"phase": "succeeded", "approval": shown(approval("approved"))}},
        "bare": {},
    }
    assert stale_approval_ids(seen, {"synced"}) == {"ended": "1a2b3c4d5e"}
