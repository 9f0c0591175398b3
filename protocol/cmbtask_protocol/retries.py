"""Retries: when a task is run again, and after how long.

A task declares ``retries`` (0 to ``MAX_RETRIES``, default 0) and
``retry_backoff_s`` when it is submitted. It is run again only when its
runner *died*: the runner's process ended without its final event reaching
the gateway (a crash, SIGKILL, the OOM killer, a lost link to the gateway, a
final event never acknowledged), or a signal that no cancel asked for stopped
it (a pod evicted, deleted or on a drained node), or its pod ended for one of
``RETRYABLE_POD_REASONS``. A task that ended by its own account is never run
again: succeeded, failed from its own logic (the engine raised, an approval
was rejected, its budget ran out: the runner reports each cleanly), cancelled
or timed out (its ``timeout_s`` is its own limit). Neither is a runner that
could not start for a reason that would not change (``RunnerExit.USAGE``, an
image that cannot be pulled, a refused spec).

The backoff is exponential: attempt *n* (the first run being attempt 1)
starts ``retry_backoff_s * 2**(n-2)`` seconds after attempt *n-1* died, at
most ``MAX_RETRY_DELAY_S``. The attempt count is stored with the task, so a
gateway restarted between attempts runs exactly the attempts that remain.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from .jsontypes import JSON_NUMBER, JsonFloat
from .process import RunnerExit

__all__ = [
    "DEFAULT_RETRY_BACKOFF_S",
    "MAX_RETRIES",
    "MAX_RETRY_DELAY_S",
    "RETRYABLE_POD_REASONS",
    "Retries",
    "RetryBackoffS",
    "pod_died",
    "retry_delay_s",
    "runner_died",
]

MAX_RETRIES: Final = 5
DEFAULT_RETRY_BACKOFF_S: Final = 5.0
MAX_RETRY_DELAY_S: Final = 3600.0

Retries = Annotated[int, Field(ge=0, le=MAX_RETRIES), JSON_NUMBER]
RetryBackoffS = Annotated[JsonFloat, Field(ge=0, le=MAX_RETRY_DELAY_S)]

#: ``CmbTask`` status reasons of a pod that died of its environment, not its task
RETRYABLE_POD_REASONS: Final = frozenset(
    {"OOMKilled", "Evicted", "PodDeleted", "Error", "NodeLost", "NodeShutdown", "Terminated"}
)


def retry_delay_s(backoff_s: float, attempt: int) -> float:
    """Seconds to wait before starting ``attempt`` (2 is the first retry)."""
    return float(min(backoff_s * 2 ** max(attempt - 2, 0), MAX_RETRY_DELAY_S))


def runner_died(exit_code: int | None) -> bool:
    """Whether a runner process that ended without its final event reaching the
    gateway died (and may be retried): every ending but a start without its
    configuration, which a retry would repeat. ``None``: the code is unknown
    (the process was not our child), negative: a signal killed it."""
    return exit_code != RunnerExit.USAGE


def pod_died(reason: str | None, exit_code: int | None) -> bool:
    """The same for a runner pod, from its ``CmbTask`` status."""
    return reason in RETRYABLE_POD_REASONS and runner_died(exit_code)
