"""The FastAPI application factory.

``create_app(settings)`` wires the gateway, migrates the schema when asked
to, serves the API, both sockets and the built UI, and turns every error into
a JSON ``ErrorBody`` with a stable ``code``.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from cmbtask_protocol import ErrorBody
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import tracing
from .access_log import AccessLog
from .api.allow import allowed_methods
from .api.openapi_doc import install_openapi
from .api.routes import account, approvals, meta, sessions, tasks
from .api.socket_entry import SocketEntry
from .api.ws_client import router as client_socket
from .api.ws_runner import router as runner_socket
from .composition import Gateway
from .db.migrate import upgrade
from .errors import GatewayError
from .http_guard import RequestGuard
from .http_tracing import TraceRequests
from .logs import get_logger
from .services.tasks import available_engines
from .settings import Settings

__all__ = ["create_app", "create_server_app"]

log = get_logger("cmbtask.http")


def _error(
    status: int, code: str, message: str, detail: object = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, detail=detail)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """``routers``: the included ones, whose routes a 405's ``Allow`` names."""

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, error: GatewayError) -> JSONResponse:
        return _error(error.status_code, error.code, error.message, error.detail, error.headers())

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        detail = [{k: v for k, v in p.items() if k in {"loc", "msg", "type"}} for p in problems]
        return _error(422, "invalid_request", f"{where}: {first['msg']}", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        response = _error(error.status_code, "http_error", str(error.detail))
        response.headers.update(error.headers or {})
        if error.status_code == 405:
            routes = [*app.router.routes, *(route for router in routers for route in router.routes)]
            response.headers["Allow"] = allowed_methods(routes, request.scope)
        return response


def _guard_limits(settings: Settings) -> dict[str, Any]:
    return {
        "max_url_bytes": settings.max_url_bytes,
        "max_header_bytes": settings.max_header_bytes,
        "max_headers": settings.max_headers,
        "max_body_bytes": settings.max_request_bytes,
        "body_timeout_s": settings.request_body_timeout_s,
    }


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    # Added first, so it runs inside the access log, which records its refusals.
    app.add_middleware(RequestGuard, **_guard_limits(settings))
    app.add_middleware(AccessLog, metrics=lambda: app.state.gateway.metrics)


def _mount_ui(app: FastAPI, settings: Settings) -> None:
    ui_dir = settings.resolved_ui_dir
    if ui_dir is None:

        @app.get("/", include_in_schema=False)
        async def no_ui() -> JSONResponse:
            return JSONResponse(
                {"message": "cmbtask gateway; the web UI is not built (bash scripts/ui.sh)", "docs": "/docs"}
            )

        return
    index = ui_dir / "index.html"
    if (ui_dir / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=ui_dir / "assets"), name="assets")

    @app.get("/{path:path}", include_in_schema=False)
    async def spa(path: str) -> FileResponse:
        # Client-side routes all load the app; real files are served as such.
        if path.startswith(("api/", "ws/")):
            raise GatewayError(f"no route {path!r}", code="not_found").with_status(404)
        candidate = (ui_dir / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(ui_dir.resolve()):
            return FileResponse(candidate)
        return FileResponse(index)


def create_app(settings: Settings | None = None, *, own_process: bool = False) -> FastAPI:
    """``own_process``: the app is all this process serves (``cmbtask up``),
    so what exists once it has started may be frozen for the whole process."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.auto_migrate:
            await asyncio.to_thread(upgrade, settings.resolved_database_url)
        gateway = Gateway.build(settings)
        app.state.gateway = gateway
        await gateway.start()
        if own_process:
            _freeze_startup_heap()
        log.info("gateway.started", url=settings.resolved_public_url, executor=gateway.executor.name)
        try:
            yield
        finally:
            await gateway.stop()
            log.info("gateway.stopped")
            await asyncio.to_thread(tracing.flush)

    # FastAPI's own telemetry stays off: it would trace every request a second
    # time and hold a span open per WebSocket for the socket's whole life; our
    # request spans (``http_tracing``) cover HTTP only.
    native_telemetry: TelemetryConfig = {
        "tracing": False,
        "metrics": False,
        "logs": False,
        "auto_configure": False,
    }
    app = FastAPI(title="cmbtask", version="0.1.0", lifespan=lifespan, telemetry=native_telemetry)
    routers = (
        account.router,
        sessions.router,
        tasks.router,
        approvals.router,
        meta.router,
        client_socket,
        runner_socket,
    )
    _install_error_handlers(app, routers)
    _install_middleware(app, settings)
    if tracing.configure() and (tracer := tracing.tracer()) is not None:
        # Outermost: the span covers the guard and the access log as well.
        app.add_middleware(TraceRequests, tracer=tracer)
    for router in routers:
        app.include_router(router)
    _mount_ui(app, settings)
    install_openapi(app, lambda: _runnable_engines(app), settings.auth_mode, settings.proxy_user_header)
    return app


def create_server_app(settings: Settings, *, own_process: bool = False) -> SocketEntry:
    """What ``cmbtask up`` serves: the app, with its WebSockets taken off
    FastAPI's stack (``api/socket_entry``)."""
    app = create_app(settings, own_process=own_process)
    return SocketEntry(app, RequestGuard(app, **_guard_limits(settings)))


def _freeze_startup_heap() -> None:
    """Move what is alive once the gateway has started (modules, the app, the
    engine and its pools: hundreds of thousands of objects that live as long
    as the process) out of the cycle collector's sight. A full collection
    then walks only what came later: in ``bench/gateway_fanout.py`` its pause
    fell from 84-93 ms to 25 ms, the spikes that set the paced p99."""
    gc.collect()  # garbage from the start is freed, not frozen
    gc.freeze()


def _runnable_engines(app: FastAPI) -> dict[str, list[str] | None]:
    """What the document offers: the runners' answer once known, else every
    installed engine with any mode (as submission then takes them)."""
    gateway: Gateway | None = getattr(app.state, "gateway", None)
    known = gateway.engines.runnable() if gateway is not None else None
    return known if known is not None else dict.fromkeys(available_engines())
