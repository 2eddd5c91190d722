"""The console's running state, built in a controller's lifespan: its settings, its sources, the budget store, the
tenants' keys, the admin token and the sign-in limiter."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lynx.accounting.tenants import TenantRegistry
from lynx.service.files import shared_token
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx_budget.console.sessions import ADMIN_SUBJECT, Session, new_session, session_key
from lynx_budget.console.settings import ConsoleSettings
from lynx_budget.console.signins import FailedSignins, failed_signins
from lynx_budget.console.sources import ConsoleSources
from lynx_budget.store import BudgetStore


@dataclass
class Console:
    settings: ConsoleSettings
    sources: ConsoleSources
    store: Callable[[], BudgetStore]  # a fresh store per action: the Kubernetes one remembers what it read
    tenants: TenantRegistry
    admin_token: str
    signins: FailedSignins
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @classmethod
    def open(cls, settings: ConsoleSettings, prometheus: PrometheusClient, store: Callable[[], BudgetStore]
             ) -> Console:
        failed_signins()  # exported from the start: no failure yet reads 0, not "no data"
        return cls(settings, ConsoleSources.open(settings, prometheus), store, TenantRegistry(settings.tenants_file),
                   shared_token(settings.admin_token_file),
                   FailedSignins(settings.failed_signins_allowed, settings.failed_signin_window_seconds))

    def close(self) -> None:
        self.sources.close()

    @property
    def key(self) -> bytes:
        return session_key(self.admin_token)

    def sign_in(self, token: str) -> Session | None:
        """A session for the admin token or a tenant's API key (checked as the gateway checks it); None for neither."""
        lifetime, now = self.settings.session_hours * 3600, self.now().timestamp()
        if hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return new_session("admin", ADMIN_SUBJECT, now, lifetime)
        tenant = self.tenants.authenticate(token) if token else None
        return new_session("tenant", tenant.id, now, lifetime) if tenant else None
