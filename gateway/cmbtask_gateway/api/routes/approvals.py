"""``/api/approvals``: list, and resolve (the first decision wins)."""

from __future__ import annotations

from typing import Annotated

from cmbtask_protocol import NO_NUL, ApprovalList, ApprovalResolve, ApprovalStatus, ApprovalView
from fastapi import APIRouter, Query

from ..deps import CurrentUser, GatewayDep
from ..errors_doc import AUTHENTICATED, WITH_BODY, errors

router = APIRouter(prefix="/api/approvals", tags=["approvals"])


@router.get("", responses=errors(AUTHENTICATED))
async def list_approvals(
    user: CurrentUser,
    gateway: GatewayDep,
    status: Annotated[ApprovalStatus | None, Query()] = None,
    session_id: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
) -> ApprovalList:
    items = await gateway.approvals.list(user, status.value if status else None, session_id)
    return ApprovalList(items=items)


@router.post("/{approval_id}/resolve", responses=errors(AUTHENTICATED, WITH_BODY, 404, 409))
async def resolve_approval(
    approval_id: str, body: ApprovalResolve, user: CurrentUser, gateway: GatewayDep
) -> ApprovalView:
    return await gateway.approvals.resolve(user, approval_id, body.decision, body.text)
