from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI

from lynx.gateway.orchestrator import Pipeline
from lynx.gateway.routes import router
from lynx.gateway.settings import GatewaySettings
from lynx.gateway.tenants import TenantRegistry
from lynx.gateway.upstream import Upstreams
from lynx.accounting.ledger import Ledger
from lynx.accounting.pricing import CostSettings
from lynx.service import create_service_app, ready_when_loaded

# On shutdown, how long open streams get to bring their decoder's final report so they can be charged.
DRAIN_SECONDS = 10.0


async def ready_with_upstreams(app: FastAPI) -> bool:
    """Ready only when this process and all three services behind it are ready."""
    return await ready_when_loaded(app) and await app.state.upstreams.all_ready()


def create_app(settings: GatewaySettings | None = None, cost_settings: CostSettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    cost_settings = cost_settings or CostSettings()

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upstreams = Upstreams.connect(settings, app.state.tracer_provider)
        app.state.upstreams = upstreams
        app.state.tenants = TenantRegistry(settings.tenants_file)
        pipeline = Pipeline(settings, upstreams, Ledger(cost_settings), app.state.tracer)
        app.state.pipeline = pipeline
        try:
            yield
        finally:
            await pipeline.drain(DRAIN_SECONDS)
            await upstreams.aclose()

    return create_service_app(name="gateway", settings=settings, lifespan=lifespan, router=router,
                              readiness=ready_with_upstreams)
