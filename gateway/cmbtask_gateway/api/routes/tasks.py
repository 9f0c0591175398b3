"""``/api/tasks``: read, cancel, and files a local task produced."""

from __future__ import annotations

from pathlib import Path

from cmbtask_protocol import TaskView
from fastapi import APIRouter
from fastapi.responses import FileResponse

from ...errors import NotFound
from ..deps import CurrentUser, GatewayDep
from ..errors_doc import AUTHENTICATED, errors

router = APIRouter(prefix="/api/tasks", tags=["tasks"])

MAX_FILE_BYTES = 50 * 1024 * 1024


@router.get("/{task_id}", responses=errors(AUTHENTICATED, 404))
async def get_task(task_id: str, user: CurrentUser, gateway: GatewayDep) -> TaskView:
    return await gateway.tasks.get(user, task_id)


@router.post("/{task_id}/cancel", responses=errors(AUTHENTICATED, 404, 409))
async def cancel_task(task_id: str, user: CurrentUser, gateway: GatewayDep) -> TaskView:
    return await gateway.tasks.cancel(user, task_id)


@router.get(
    "/{task_id}/files/{path:path}",
    responses={**errors(AUTHENTICATED, 404), 200: {"content": {"application/octet-stream": {}}}},
)
async def get_task_file(task_id: str, path: str, user: CurrentUser, gateway: GatewayDep) -> FileResponse:
    """A file from a local task's work directory (plots, reports)."""
    await gateway.tasks.get(user, task_id)
    root = (gateway.settings.data_dir / "tasks" / task_id).resolve()
    target = (root / path).resolve()
    # Refuse anything that escapes the work directory (``..``, symlinks).
    if not target.is_relative_to(root) or not target.is_file():
        raise NotFound(f"file {path!r} not found in task {task_id}")
    if target.stat().st_size > MAX_FILE_BYTES:
        raise NotFound(f"file {path!r} is larger than {MAX_FILE_BYTES} bytes")
    return FileResponse(target, filename=Path(path).name)
