"""Health, readiness, metrics, modes and the caller's identity."""

from __future__ import annotations

import asyncio

from cmbtask_protocol import MODES, ModeInfo, TaskPhase
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import func, select, text

from ...catalog import mode_views
from ...db.models import Task
from ...services.tasks import available_engines
from ..deps import CurrentUser, GatewayDep
from ..errors_doc import AUTHENTICATED, errors

router = APIRouter(tags=["meta"])
#: a check answers within this (a balancer's own timeout is a few seconds)
READY_TIMEOUT_S = 2.0


class Readiness(BaseModel):
    status: str
    #: why the database cannot be used, when it cannot
    database: str | None = None
    #: set when this replica does not hear the others' events
    relay: str | None = None


class Identity(BaseModel):
    user: str
    auth_mode: str


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"model": Readiness, "description": "The database answers (and this replica hears the others)."},
        503: {"model": Readiness, "description": "The database does not answer, or the replica is deaf."},
    },
)
async def readyz(gateway: GatewayDep) -> Response:
    """Ready: the database answers in time and, with replicas, this one hears
    the others (``replica_relay``); a balancer sends nobody here otherwise."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), gateway.sessions_factory() as db:
            await db.execute(text("SELECT 1"))
    except Exception as error:
        reason = str(error)[:200] or f"no answer within {READY_TIMEOUT_S:g} s"
        return JSONResponse({"status": "unavailable", "database": reason}, status_code=503)
    if gateway.relay is not None and not gateway.relay.listening:
        return JSONResponse({"status": "unavailable", "relay": "not listening"}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(gateway: GatewayDep) -> Response:
    async with gateway.sessions_factory() as db:
        counts = dict((await db.execute(select(Task.phase, func.count()).group_by(Task.phase))).all())
    for phase in TaskPhase:
        gateway.metrics.tasks.labels(phase.value).set(counts.get(phase.value, 0))
    gateway.metrics.approvals_pending.set(await gateway.approvals.pending_count())
    gateway.metrics.connections.labels("runner").set(len(gateway.registry))
    gateway.metrics.connections.labels("client").set(gateway.hub.subscriber_count())
    gateway.metrics.asyncio_tasks.set(len(asyncio.all_tasks()))
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/modes", responses=errors(AUTHENTICATED))
async def modes(user: CurrentUser, gateway: GatewayDep) -> list[ModeInfo]:
    """Every mode, with the engines that can run it here for this user (their
    stored keys count) and whether the ``cmbagent`` engine can (see catalog.py)."""
    own_keys = await gateway.keys.variables(user)
    return mode_views(MODES, await gateway.engines.get(), available_engines(), own_keys)


@router.get("/api/me", responses=errors(AUTHENTICATED))
async def me(user: CurrentUser, gateway: GatewayDep) -> Identity:
    return Identity(user=user, auth_mode=gateway.settings.auth_mode)
