"""The operator's lease desk (``lease_desk``): the TenantBudgets as its budgets, its ledger in a ConfigMap
(``kube.LedgerConfigMap``), and ``POST /v1/leases`` served on a thread of its own beside kopf's event loop, so that
a slow reconciliation never delays a gateway's renewal, and kopf keeps the process' signals.

The chart creates the ledger's ConfigMap without data and never renders any (an upgrade leaves what the operator
wrote alone), and the operator writes the ledger as soon as it starts: a ConfigMap without it has never held one,
and the ledger starts fresh. A ConfigMap that cannot be read (deleted) is a lost ledger: nothing is granted until the
leases it may have held are over, then it is rebuilt from Prometheus.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import uvicorn
from fastapi import FastAPI

from lynx.service.app import create_service_app
from lynx.service.background import every
from lynx.service.files import shared_token
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx_budget import kube
from lynx_budget.console.mount import console_open, with_console
from lynx_budget.kubestore import KubeStore
from lynx_budget.lease_desk import LeaseDesk
from lynx_budget.lease_routes import leases_router
from lynx_budget.settings import OperatorSettings

log = logging.getLogger("lynx.budgets.leases")
START_TIMEOUT_SECONDS = 30


def operator_desk(settings: OperatorSettings, now: Callable[[], datetime]) -> LeaseDesk:
    """Opens the ledger (API calls: run it in a thread)."""
    api = kube.api_client()  # its own: this desk works on the server's thread
    budgets = kube.BudgetList(api, settings.configmap_namespace)
    copy = kube.LedgerConfigMap(api, settings.configmap_namespace, settings.leases_configmap_name)
    return LeaseDesk.open(copy, False, shared_token(settings.lease_token_file),
                          settings.lease_terms(), budgets.budget_of, budgets, now)


def lease_app(settings: OperatorSettings, desk: LeaseDesk) -> FastAPI:
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.desk = desk
        prometheus = PrometheusClient(settings.prometheus_url, settings.prometheus_timeout_seconds)
        try:
            with console_open(app, prometheus, lambda: KubeStore(settings.configmap_namespace)):
                async with every(settings.interval_seconds, lambda: desk.upkeep(prometheus), log,
                                 "lease_upkeep_failed"):
                    yield
        finally:
            prometheus.close()

    return create_service_app(name="budget-operator", settings=settings, lifespan=lifespan,
                              router=with_console(leases_router()))


class LeaseServer:
    """uvicorn on its own thread (and event loop); uvicorn leaves signals alone off the main thread."""

    def __init__(self, settings: OperatorSettings, desk: LeaseDesk) -> None:
        config = uvicorn.Config(lease_app(settings, desk), host=settings.host, port=settings.port, log_config=None,
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="lease-server", daemon=True)
        self.where = f"{settings.host}:{settings.port}"

    def start(self) -> None:
        """Returns once it listens; RuntimeError when it cannot (a port in use)."""
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the lease endpoint could not listen on {self.where}; its log says why")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
