"""The FastAPI scaffolding every lynx service shares: probes, metrics, errors, tracing, logs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lynx.service.errors import LynxError, error_body, validation_message
from lynx.service.faults import FaultState, InjectedFaults, faults_router
from lynx.service.settings import ServiceSettings
from lynx.service.shutdown import Drain, DrainingRequests, new_api_work
from lynx.telemetry.http import TOO_LARGE_CODE, BodySizeLimit, ObservedRequests, metrics_response
from lynx.telemetry.logs import configure_logging
from lynx.telemetry.tracing import create_tracer_provider, instrument_app

log = logging.getLogger("lynx.service.app")
Lifespan = Callable[[FastAPI], "AsyncIterator[None]"]
Readiness = Callable[[FastAPI], Awaitable[bool]]


async def ready_when_loaded(app: FastAPI) -> bool:
    return bool(getattr(app.state, "ready", False))


def create_service_app(
    *,
    name: str,
    settings: ServiceSettings,
    lifespan: Lifespan,
    router: APIRouter,
    readiness: Readiness = ready_when_loaded,
    new_work: Callable[[str], bool] = new_api_work,
) -> FastAPI:
    """Build one service's app; heavy loading happens in ``lifespan``, never here. ``new_work`` tells the API
    paths a stopping instance refuses (lynx.service.shutdown) from those it still serves."""
    configure_logging(f"lynx-{name}", settings.log_level)
    provider = create_tracer_provider(f"lynx-{name}")

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = False
        try:
            async with asynccontextmanager(lifespan)(app):
                app.state.ready = True
                log.info("ready", extra={"fields": {"port": settings.port}})
                yield
                app.state.ready = False
        finally:
            provider.shutdown()  # flushes spans still queued for export

    app = FastAPI(title=f"lynx {name}", lifespan=run)
    app.state.settings = settings
    app.state.tracer_provider = provider
    app.state.tracer = provider.get_tracer(f"lynx.{name}")
    app.state.faults = FaultState()
    app.state.drain = Drain(settings.shutdown_grace_seconds, settings.final_scrape_wait_seconds, new_work)
    app.include_router(router)
    app.include_router(probes_router(readiness))
    add_error_handlers(app)
    instrument_app(app, provider)
    if settings.faults_enabled:
        log.warning("faults_enabled", extra={"fields": {"route": "/admin/faults"}})
        app.include_router(faults_router())
        app.add_middleware(InjectedFaults, state=app.state.faults)
    app.add_middleware(DrainingRequests, drain=app.state.drain)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Outermost of lynx's middleware, inside OpenTelemetry's: it sees the server span of every request.
    app.add_middleware(ObservedRequests)
    return app


def probes_router(readiness: Readiness) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        ready = not request.app.state.drain.stopping and await readiness(request.app)
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request):
        return metrics_response(request)

    return router


def add_error_handlers(app: FastAPI) -> None:
    """Errors a handler raises on purpose; any other exception is answered by ObservedRequests (lynx.telemetry.http),
    inside which the request's ids are still known and the connection stays usable."""
    @app.exception_handler(LynxError)
    async def lynx_error(_: Request, exc: LynxError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        return JSONResponse(error_body(message, "invalid_request", param=param), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: TOO_LARGE_CODE}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(str(exc.detail), code), status_code=exc.status_code, headers=exc.headers)
