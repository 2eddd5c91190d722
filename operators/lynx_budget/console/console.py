"""The console's running state, built in a controller's lifespan: its settings, its sources, the budget store, the
tenants' keys, the admin token and the sign-in limiter."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lynx.accounting.tenants import TenantRegistry, hash_key
from lynx.service.files import shared_token
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx_budget.console.sessions import ADMIN_SUBJECT, Session, SignedOut, new_session, session_key
from lynx_budget.console.settings import ConsoleSettings
from lynx_budget.console.signins import FailedSignins, failed_signins
from lynx_budget.console.sources import ConsoleSources
from lynx_budget.store import BudgetStore


# Hex digits of a key's SHA-256 a tenant's session carries (64 bits: the cookie is readable, the key is not derivable).
KEY_FINGERPRINT_LENGTH = 16


@dataclass
class Console:
    settings: ConsoleSettings
    sources: ConsoleSources
    store: Callable[[], BudgetStore]  # a fresh store per action: the Kubernetes one remembers what it read
    tenants: TenantRegistry
    admin_token: str
    signins: FailedSignins
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    signed_out: SignedOut = field(default_factory=SignedOut)

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
        if tenant is None:
            return None
        return new_session("tenant", tenant.id, now, lifetime, hash_key(token)[:KEY_FINGERPRINT_LENGTH])

    def still_valid(self, session: Session) -> bool:
        """A verified session not signed out, and a tenant owner's only while its key is still the tenant's."""
        if self.signed_out.holds(session, self.now().timestamp()):
            return False
        return session.role == "admin" or self.tenants.holds_key(session.subject, session.key_fingerprint)
