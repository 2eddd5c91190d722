"""Fault injection for chaos testing: off unless a service runs with ``LYNX_<SERVICE>_FAULTS_ENABLED=true``.

When enabled, ``PUT /admin/faults`` sets a ``FaultPlan``: latency and errors added to the service's
API routes (not to its probes or metrics), and, on the decoder, failures of engine steps.
When disabled the route does not exist (404), so a production deployment cannot be broken by a request.
"""

from __future__ import annotations

import asyncio
import random

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from lynx.contracts.faults import FaultPlan
from lynx.service.errors import error_body

API_PREFIX = "/v1/"


class FaultState:
    """The plan in force; shared by the route that sets it and the code that obeys it."""

    def __init__(self) -> None:
        self.plan = FaultPlan()


def faults_router() -> APIRouter:
    router = APIRouter(prefix="/admin")

    @router.get("/faults")
    async def current(request: Request) -> FaultPlan:
        return request.app.state.faults.plan

    @router.put("/faults")
    async def replace(plan: FaultPlan, request: Request) -> FaultPlan:
        request.app.state.faults.plan = plan
        return plan

    return router


class InjectedFaults:
    """Delays or fails API requests as the plan says."""

    def __init__(self, app: ASGIApp, state: FaultState) -> None:
        self.app = app
        self.state = state
        self.random = random.Random()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plan = self.state.plan
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        if plan.latency_seconds:
            await asyncio.sleep(plan.latency_seconds)
        if plan.error_rate and self.random.random() < plan.error_rate:
            response = JSONResponse(error_body("Injected failure (fault plan).", "injected_fault", "server_error"),
                                    status_code=500)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
