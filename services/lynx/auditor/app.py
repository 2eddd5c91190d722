from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, Request

from lynx.auditor.runner import Auditor
from lynx.auditor.settings import AuditorSettings
from lynx.telemetry.tracestore import TraceStoreClient
from lynx.service.errors import LynxError
from lynx.service.app import create_service_app

router = APIRouter(prefix="/v1")


@router.post("/audit")
async def audit_now(request: Request) -> dict:
    """Run an audit now (as the periodic loop would) and return the window's totals."""
    try:
        totals = await asyncio.to_thread(request.app.state.auditor.run_once)
    except Exception as error:
        raise LynxError(503, f"The trace store could not be read ({type(error).__name__}); see the auditor's log.",
                        "trace_store_unavailable", "server_error", headers={"Retry-After": "5"}) from error
    return {"traces": totals.traces, "spans": totals.spans, "orphan_spans": totals.orphans,
            "incomplete_traces": totals.incomplete, "orphan_examples": [list(e) for e in totals.orphan_examples]}


def create_app(settings: AuditorSettings | None = None) -> FastAPI:
    settings = settings or AuditorSettings()

    async def periodically(auditor: Auditor) -> None:
        while True:
            with contextlib.suppress(Exception):  # logged and counted by the auditor
                await asyncio.to_thread(auditor.run_once)
            await asyncio.sleep(settings.interval_seconds)

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = TraceStoreClient(settings.trace_store_url, settings.trace_store_kind)
        app.state.auditor = Auditor(settings, store)
        loop = asyncio.create_task(periodically(app.state.auditor))
        try:
            yield
        finally:
            loop.cancel()
            store.close()

    async def trace_store_ready(app: FastAPI) -> bool:
        return bool(getattr(app.state, "ready", False)) and await asyncio.to_thread(app.state.auditor.store.ready)

    return create_service_app(name="auditor", settings=settings, lifespan=lifespan, router=router,
                              readiness=trace_store_ready)
