"""The engine context: the bridge between an engine's worker thread and the link.

Engines are synchronous and block (they wrap CMBAgent, AG2, user scripts), so
every method here may be called from any thread. Frames go into the outbox
(numbered, delivered exactly once); answers from the gateway (approval
decisions, state-save results, cancel) arrive on the event loop and are handed
over through one condition variable that blocked callers wait on.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from cmbtask_protocol import (
    ApprovalStatus,
    Decision,
    EventType,
    OnTimeout,
    RunnerApprovalDecision,
    RunnerStateResult,
    RunnerWelcome,
    TaskSpec,
    validate_payload,
)
from cmbtask_protocol.events import EVENT_TYPE_PATTERN

from .budget import Budget
from .engines.base import ApprovalOutcome, EngineError, StateConflict, TaskCancelled
from .outbox import Outbox

__all__ = ["RunnerContext"]

log = structlog.get_logger("cmbtask_runner.context")

#: how long after an approval's timeout the runner stops waiting for the gateway's verdict
LOCAL_EXPIRY_GRACE_S = 5.0
#: how long a state save may wait for the gateway's answer (it may be restarting)
STATE_SAVE_WAIT_S = 600.0
_WAIT_SLICE_S = 0.2
#: compiled at import: in the fork server, once for every runner it forks
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)


@dataclass
class _PendingSave:
    expected_version: int | None


class RunnerContext:
    """Implements :class:`~cmbtask_runner.engines.base.EngineContext`.

    It exists from the runner's start, pending until the gateway's first
    ``welcome`` names the task and its stored state: a cancel (a signal, a
    cancel frame) that comes before then is held like any other."""

    def __init__(self, work_dir: Path, outbox: Outbox) -> None:
        self._task: TaskSpec | None = None
        self.work_dir = work_dir
        self.cancelled = threading.Event()
        self.cancel_reason = ""
        #: why the runner itself stopped the task as failed (a crossed budget)
        self.failure: str | None = None
        #: the task's limits, known from the welcome on (no engine runs before it)
        self.budget = Budget()
        self._signal: str | None = None
        self._outbox = outbox
        self._state: dict[str, Any] | None = None
        self._version = 0
        self.started_from_version: int | None = None
        self._cv = threading.Condition()
        self._waiting_approvals: set[str] = set()
        self._decisions: dict[str, RunnerApprovalDecision] = {}
        self._pending_saves: dict[int, _PendingSave] = {}
        self._state_results: dict[int, RunnerStateResult] = {}
        #: sends captured output written so far (set once capture runs)
        self.flush_output: Callable[[], None] | None = None
        #: called once on cancel, from the cancelling thread (an engine stops its child process)
        self.cancel_hooks: list[Callable[[], None]] = []
        #: sees every event the engine emits (``tracing.StepSpans``); None when not tracing
        self.observer: Callable[[str, dict[str, Any]], None] | None = None

    @property
    def task(self) -> TaskSpec:
        if self._task is None:
            raise RuntimeError("the task is not known before the gateway's welcome")
        return self._task

    @property
    def welcomed(self) -> bool:
        return self._task is not None

    # ---- events ---------------------------------------------------------------------

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """Validate and queue one event (delivered exactly once)."""
        self.emit_numbered(event_type, data)

    def emit_numbered(self, event_type: str, data: dict[str, Any]) -> int:
        """:meth:`emit`, returning the event's ``rseq`` (to wait for its ack)."""
        if len(event_type) > 64 or not _EVENT_TYPE.match(event_type):
            raise ValueError(f"bad event type {event_type!r}: use dotted lower-case names")
        over = None
        if event_type == EventType.COST_UPDATE:
            data, over = self.budget.charge(data)
        payload = validate_payload(event_type, dict(data))
        flush = self.flush_output
        if flush is not None and event_type != EventType.OUTPUT:
            flush()  # output printed before this event is sent before it
        rseq = self._outbox.put({"type": "event", "event_type": event_type, "data": payload, "ts": _now()})
        if self.observer is not None:
            self.observer(event_type, payload)
        if over is not None:
            self.fail(over)
        return rseq

    # ---- approvals ------------------------------------------------------------------

    def request_approval(
        self,
        prompt: str,
        *,
        kind: str = "approval",
        options: Sequence[Decision] = (Decision.APPROVE, Decision.REJECT),
        allow_text: bool = False,
        context: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        on_timeout: OnTimeout | None = None,
    ) -> ApprovalOutcome:
        approval_id = uuid.uuid4().hex
        timeout = timeout_s if timeout_s is not None else self.task.approval_timeout_s
        policy = OnTimeout(on_timeout) if on_timeout is not None else self.task.on_timeout
        with self._cv:
            self._waiting_approvals.add(approval_id)
        self._outbox.put(
            {
                "type": "approval.request",
                "approval_id": approval_id,
                "kind": kind,
                "prompt": prompt,
                "options": [Decision(option).value for option in options],
                "allow_text": allow_text,
                "context": context or {},
                "timeout_s": timeout,
                "on_timeout": policy.value,
            }
        )
        log.info("approval.requested", approval_id=approval_id, kind=kind, timeout_s=timeout)
        try:
            decision = self._await_decision(approval_id, timeout)
        finally:
            with self._cv:
                self._waiting_approvals.discard(approval_id)
        return self._outcome(approval_id, decision, policy)

    def _await_decision(self, approval_id: str, timeout: float | None) -> RunnerApprovalDecision | None:
        """The gateway's verdict, or None once the local deadline passes without one."""
        deadline = None if timeout is None else time.monotonic() + timeout + LOCAL_EXPIRY_GRACE_S
        with self._cv:
            while approval_id not in self._decisions:
                if self.cancelled.is_set():
                    raise TaskCancelled(self.cancel_reason or "cancelled while waiting for approval")
                if deadline is not None and time.monotonic() >= deadline:
                    log.warning("approval.local_expiry", approval_id=approval_id)
                    return None
                self._cv.wait(_WAIT_SLICE_S)
            return self._decisions.pop(approval_id)

    def _outcome(
        self, approval_id: str, decision: RunnerApprovalDecision | None, policy: OnTimeout
    ) -> ApprovalOutcome:
        if decision is None or decision.status is ApprovalStatus.EXPIRED:
            log.info("approval.expired", approval_id=approval_id, on_timeout=policy.value)
            if policy is OnTimeout.FAIL:
                raise EngineError(
                    "approval expired without an answer (the task's policy on timeout is 'fail')"
                )
            return ApprovalOutcome(ApprovalStatus.EXPIRED, None, None, None, on_timeout=policy)
        if decision.status is ApprovalStatus.CANCELLED:
            raise TaskCancelled(self.cancel_reason or "approval cancelled")
        log.info("approval.resolved", approval_id=approval_id, status=decision.status.value)
        return ApprovalOutcome(decision.status, decision.decision, decision.text, decision.resolved_by)

    def pending_approval_ids(self) -> list[str]:
        with self._cv:
            return sorted(self._waiting_approvals)

    # ---- session state ----------------------------------------------------------------

    def load_state(self) -> dict[str, Any] | None:
        return None if self._state is None else dict(self._state)

    @property
    def state_version(self) -> int:
        return self._version

    def save_state(self, state: dict[str, Any], checkpoint: str = "") -> int:
        expected = self._version
        with self._cv:
            rseq = self._outbox.put(
                {"type": "state.save", "state": state, "expected_version": expected, "checkpoint": checkpoint}
            )
            self._pending_saves[rseq] = _PendingSave(expected)
        try:
            result = self._await_state_result(rseq)
        finally:
            with self._cv:
                self._pending_saves.pop(rseq, None)
        if not result.ok:
            raise StateConflict(expected, result.version, result.message)
        self._state, self._version = dict(state), result.version
        log.info("state.saved", version=result.version, checkpoint=checkpoint)
        return result.version

    def _await_state_result(self, rseq: int) -> RunnerStateResult:
        deadline = time.monotonic() + STATE_SAVE_WAIT_S
        with self._cv:
            while rseq not in self._state_results:
                if time.monotonic() >= deadline:
                    raise EngineError(
                        f"the gateway did not confirm the state save within {STATE_SAVE_WAIT_S:.0f} s"
                    )
                self._cv.wait(_WAIT_SLICE_S)
            return self._state_results.pop(rseq)

    # ---- from the event loop ---------------------------------------------------------------

    def on_decision(self, frame: RunnerApprovalDecision) -> None:
        with self._cv:
            # A decision replayed after a reconnect may find nobody waiting any more.
            if frame.approval_id in self._waiting_approvals:
                self._decisions[frame.approval_id] = frame
                self._cv.notify_all()

    def on_state_result(self, frame: RunnerStateResult) -> None:
        with self._cv:
            if frame.rseq in self._pending_saves:
                self._state_results[frame.rseq] = frame
                self._cv.notify_all()

    def on_welcome(self, welcome: RunnerWelcome) -> None:
        """The first one names the task and its stored state. After a
        reconnect: a save the gateway stored but whose answer was lost shows
        as a newer stored version; treat it as confirmed."""
        with self._cv:
            if self._task is None:
                self._task = welcome.task
                self.budget = Budget.for_task(welcome.task)
                self._state, self._version = welcome.state, welcome.state_version
                self.started_from_version = welcome.state_version if welcome.state is not None else None
            for rseq, pending in self._pending_saves.items():
                lost = rseq <= welcome.acked_rseq and rseq not in self._state_results
                if lost and welcome.state_version > (pending.expected_version or 0):
                    self._state_results[rseq] = RunnerStateResult(
                        rseq=rseq, ok=True, version=welcome.state_version
                    )
            self._cv.notify_all()
        if welcome.cancel_requested:
            self.cancel("cancel requested")

    def fail(self, reason: str) -> None:
        """Stop the engine as :meth:`cancel` does, but end the task ``failed``
        with ``reason``, unless it was being cancelled already."""
        with self._cv:
            if self.cancelled.is_set():
                return
            self.failure = reason
        log.info("task.stopping_failed", reason=reason)
        self.cancel(reason)

    @property
    def terminated_by(self) -> str | None:
        """The signal that stopped the engine when no cancel has reached the
        runner (a pod deleted, a node drained); None once one has."""
        with self._cv:
            return self._signal

    def terminate(self, signal_name: str) -> None:
        """A signal stops the engine as a cancel does; a cancel that arrives
        afterwards (the gateway sends its frame along with its SIGTERM) still
        gives its reason, and the task is no longer merely terminated."""
        self._stop(f"terminated by {signal_name}", signal_name)

    def cancel(self, reason: str) -> None:
        """Ask the engine to stop. Idempotent: the first reason wins, except that
        a cancel's reason replaces a signal's (see :meth:`terminate`)."""
        self._stop(reason, None)

    def _stop(self, reason: str, signal_name: str | None) -> None:
        with self._cv:
            if self.cancelled.is_set():
                if self._signal is not None and signal_name is None and reason:
                    self.cancel_reason, self._signal = reason, None
                return
            self.cancel_reason = reason or "cancelled"
            self._signal = signal_name
            self.cancelled.set()
            self._cv.notify_all()
        log.info("task.cancel_requested", reason=self.cancel_reason, signal=signal_name)
        for hook in list(self.cancel_hooks):
            try:
                hook()
            except Exception:  # one broken hook must not keep the others from running
                log.exception("task.cancel_hook_failed")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
