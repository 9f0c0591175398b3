"""Executor backends: where task runners run.

``local`` starts one detached OS process per task; ``kubernetes`` creates one
``CmbTask`` object per task; ``none`` launches nothing, for runners started by
hand or by a test with a runner token.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..settings import Settings
from .base import Executor, ExecutorError, ExecutorStatus, LaunchRequest
from .k8s_records import Records

__all__ = ["Executor", "ExecutorError", "ExecutorStatus", "LaunchRequest", "NoExecutor", "build_executor"]


class NoExecutor:
    """Launches nothing; every runner is external and reports for itself."""

    name = "none"

    async def start(self) -> None:
        return None

    async def launch(self, request: LaunchRequest) -> str:
        raise ExecutorError("this gateway has no executor (CMBTASK_EXECUTOR=none)")

    async def cancel(self, handle: str, *, grace_s: float) -> None:
        return None

    async def inspect(self, handle: str) -> ExecutorStatus:
        return ExecutorStatus(handle=handle, alive=True)

    async def adopt(self, handles: Sequence[str]) -> list[ExecutorStatus]:
        return [ExecutorStatus(handle=handle, alive=True) for handle in handles]

    async def close(self) -> None:
        return None


def build_executor(settings: Settings, records: Records) -> Executor:
    """The configured backend; ``records`` are the gateway's, for the kubernetes one."""
    if settings.executor == "local":
        from .local import LocalExecutor

        return LocalExecutor(
            settings.data_dir.resolve(),
            settings.runner_command,
            provider_keys_fallback=settings.provider_keys_fallback,
        )
    if settings.executor == "kubernetes":
        from .kubernetes import KubernetesExecutor  # type: ignore[import-not-found,unused-ignore]

        executor: Executor = KubernetesExecutor(settings, records)
        return executor
    return NoExecutor()
