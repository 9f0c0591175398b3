"""``/api/sessions``: create, list, read, update, suspend/resume, delete, events."""

from __future__ import annotations

from typing import Annotated

from cmbtask_protocol import (
    MAX_DB_INT,
    NO_NUL,
    EventPage,
    SessionCreate,
    SessionList,
    SessionStatus,
    SessionUpdate,
    SessionView,
    TaskCreate,
    TaskPhase,
    TaskView,
)
from fastapi import APIRouter, Query, Response, status

from ...errors import Conflict
from ..deps import CurrentUser, GatewayDep
from ..errors_doc import AUTHENTICATED, WITH_BODY, errors

router = APIRouter(prefix="/api/sessions", tags=["sessions"])


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(AUTHENTICATED, WITH_BODY, 429))
async def create_session(body: SessionCreate, user: CurrentUser, gateway: GatewayDep) -> SessionView:
    return await gateway.sessions.create(user, body)


@router.get("", responses=errors(AUTHENTICATED))
async def list_sessions(
    user: CurrentUser,
    gateway: GatewayDep,
    mode: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    status: Annotated[SessionStatus | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="title contains")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> SessionList:
    return await gateway.sessions.list(
        user, mode=mode, status=status.value if status else None, query=q, limit=limit, offset=offset
    )


@router.get("/{session_id}", responses=errors(AUTHENTICATED, 404))
async def get_session(session_id: str, user: CurrentUser, gateway: GatewayDep) -> SessionView:
    return await gateway.sessions.get(user, session_id)


@router.patch("/{session_id}", responses=errors(AUTHENTICATED, WITH_BODY, 404, 409))
async def update_session(
    session_id: str, body: SessionUpdate, user: CurrentUser, gateway: GatewayDep
) -> SessionView:
    return await gateway.sessions.update(user, session_id, body)


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(AUTHENTICATED, 404))
async def delete_session(session_id: str, user: CurrentUser, gateway: GatewayDep) -> Response:
    for task in await gateway.sessions.delete(user, session_id):
        if task.handle and not TaskPhase(task.phase).is_final:
            await gateway.dispatcher.cancel_runner(task, "session deleted")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{session_id}/suspend", responses=errors(AUTHENTICATED, 404, 409))
async def suspend_session(session_id: str, user: CurrentUser, gateway: GatewayDep) -> SessionView:
    return await gateway.sessions.set_status(
        user, session_id, SessionStatus.SUSPENDED, {SessionStatus.ACTIVE}
    )


@router.post("/{session_id}/resume", responses=errors(AUTHENTICATED, 404, 409, 429))
async def resume_session(session_id: str, user: CurrentUser, gateway: GatewayDep) -> SessionView:
    return await gateway.sessions.set_status(
        user, session_id, SessionStatus.ACTIVE, {SessionStatus.SUSPENDED}
    )


@router.get("/{session_id}/events", responses=errors(AUTHENTICATED, 404))
async def session_events(
    session_id: str,
    user: CurrentUser,
    gateway: GatewayDep,
    after: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> EventPage:
    session = await gateway.sessions.get(user, session_id)
    items = await gateway.store.page(session_id, after, limit)
    last = items[-1]["seq"] if items else after
    return EventPage(items=items, last_seq=last, has_more=last < session.last_seq)


@router.post(
    "/{session_id}/tasks",
    status_code=status.HTTP_201_CREATED,
    responses=errors(AUTHENTICATED, WITH_BODY, 404, 409, 429),
)
async def submit_task(session_id: str, body: TaskCreate, user: CurrentUser, gateway: GatewayDep) -> TaskView:
    return await gateway.tasks.submit(user, session_id, body)


@router.get("/{session_id}/tasks", responses=errors(AUTHENTICATED, 404))
async def list_session_tasks(session_id: str, user: CurrentUser, gateway: GatewayDep) -> list[TaskView]:
    return await gateway.tasks.list_for_session(user, session_id)


__all__ = ["Conflict", "router"]
