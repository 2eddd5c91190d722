"""How a budget controller's app serves the console: its routes beside the controller's own, and the console's state
opened in the app's lifespan (none when LYNX_CONSOLE_ENABLED is false: every console page then says so, 404)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from fastapi import APIRouter, FastAPI

from lynx.telemetry.prometheus_api import PrometheusClient
from lynx_budget.console.console import Console
from lynx_budget.console.routes import console_router
from lynx_budget.console.settings import ConsoleSettings
from lynx_budget.store import BudgetStore


def with_console(router: APIRouter) -> APIRouter:
    router.include_router(console_router())
    return router


@contextlib.contextmanager
def console_open(app: FastAPI, prometheus: PrometheusClient, store: Callable[[], BudgetStore],
                 settings: ConsoleSettings | None = None) -> Iterator[None]:
    settings = settings or ConsoleSettings()
    app.state.console = Console.open(settings, prometheus, store) if settings.enabled else None
    try:
        yield
    finally:
        if app.state.console is not None:
            app.state.console.close()
