from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from lynx.accounting.ledger import Ledger
from lynx.accounting.pricing import NOTHING_YET, CostSettings, SoloDecoder, worst_case_cost
from lynx.accounting.shares import StepCostSettings
from lynx.gateway.budgets import Budgets
from lynx.gateway.leases import LeaseKeeper
from lynx.gateway.orchestrator import CANCEL_GRACE_SECONDS, DecoderRoute, Pipeline
from lynx.gateway.routes import router
from lynx.gateway.settings import GatewaySettings
from lynx.gateway.standing import BudgetHeaders
from lynx.accounting.tenants import TenantRegistry
from lynx.gateway.decoder_pool import DecoderPool
from lynx.gateway.upstream import Upstreams, decoder_timeout
from lynx.accounting.usage import SpendHistory
from lynx.service.app import create_service_app, ready_when_loaded
from lynx.telemetry.prometheus_api import PrometheusClient

# On shutdown, how long open streams get to bring their decoder's final report so they can be charged.
DRAIN_SECONDS = 10.0


async def ready_with_upstreams(app: FastAPI) -> bool:
    """Ready only when this process and all three services behind it are ready."""
    return await ready_when_loaded(app) and await app.state.upstreams.all_ready()


def solo_decoder(settings: GatewaySettings) -> SoloDecoder:
    """One sequence alone in the decoder, from the decoder's own step coefficients (LYNX_DECODER_STEP_*)."""
    return SoloDecoder(settings.prefill_seconds_per_token, StepCostSettings().step_cost(),
                       settings.budget_estimate_margin)


def lease_keeper(settings: GatewaySettings, cost_settings: CostSettings) -> LeaseKeeper | None:
    """This gateway's spend leases, when a budget controller grants them."""
    if settings.budget_controller_url is None:
        return None
    smallest = worst_case_cost(NOTHING_YET, 1, 1, solo_decoder(settings), cost_settings)
    return LeaseKeeper(settings.budget_controller_url, settings.lease_token_file, smallest,
                       settings.lease_chunk_requests, settings.lease_most_of_cap, settings.lease_timeout_seconds)


def cheaper_route(settings: GatewaySettings, cost_settings: CostSettings,
                  provider: TracerProvider) -> DecoderRoute | None:
    """The cheaper decoder configuration, charged at its own rate, when one is deployed."""
    addresses = settings.cheaper_decoder_addresses()
    if addresses is None:
        return None
    decoders = DecoderPool.connect(addresses, provider, decoder_timeout(settings),
                                   settings.decoder_probe_interval_seconds)
    rates = cost_settings.model_copy(update={"decoder_per_hour": settings.cheaper_decoder_per_hour})
    return DecoderRoute(settings.cheaper_model_name, decoders, Ledger(rates))


def create_app(settings: GatewaySettings | None = None, cost_settings: CostSettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    cost_settings = cost_settings or CostSettings()

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upstreams = Upstreams.connect(settings, app.state.tracer_provider)
        app.state.upstreams = upstreams
        app.state.tenants = TenantRegistry(settings.tenants_file)
        leases = lease_keeper(settings, cost_settings)
        app.state.budgets = Budgets(settings.budgets_file, leases=leases)
        prometheus = PrometheusClient(settings.prometheus_url, settings.prometheus_timeout_seconds) \
            if settings.prometheus_url else None
        app.state.usage = SpendHistory(prometheus) if prometheus else None
        renewals = asyncio.create_task(leases.run(), name="lynx-lease-renewals") if leases else None
        cheaper = cheaper_route(settings, cost_settings, app.state.tracer_provider)
        upstreams.decoder.start()
        if cheaper is not None:
            cheaper.decoders.start()
        pipeline = Pipeline(settings, upstreams, Ledger(cost_settings), app.state.tracer, solo_decoder(settings),
                            cheaper)
        app.state.pipeline = pipeline
        # Streams still open when the shutdown grace runs short end with an error event, charged.
        app.state.drain.end_early(CANCEL_GRACE_SECONDS + 1, lambda: pipeline.drain(CANCEL_GRACE_SECONDS))
        try:
            yield
        finally:
            await pipeline.drain(DRAIN_SECONDS)
            if leases is not None:
                renewals.cancel()
                await leases.aclose()
            await upstreams.aclose()
            if prometheus is not None:
                prometheus.close()
            if cheaper is not None:
                await cheaper.decoders.aclose()

    app = create_service_app(name="gateway", settings=settings, lifespan=lifespan, router=router,
                             readiness=ready_with_upstreams)
    # Outermost: every answer to a budgeted tenant's key carries its budget, whatever answered it.
    app.add_middleware(BudgetHeaders, budgets=lambda: getattr(app.state, "budgets", None),
                       tenants=lambda: getattr(app.state, "tenants", None))
    return app
