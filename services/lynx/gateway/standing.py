"""What every answer tells a tenant with a budget about it: headers with its state, cap, remaining EUR and reset
(``BudgetHeaders``, on every answer to a request with the tenant's key, errors and streams included), and in Warning
a notice in the body's ``lynx.budget`` a client can show (``notice``).

Remaining is this gateway's honest view: the published decision's remaining budget minus what this gateway charged
the tenant after that decision's spend figure (``Budgets``' own books, with or without spend leases). Charges other
gateways made since are not in it until the controller's next decision counts them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lynx.contracts.budgets import BudgetStanding, TenantDecision, rfc3339
from lynx.gateway.budgets import Budgets, counted_until, eur
from lynx.service.bearer import bearer_token
from lynx.accounting.tenants import TenantRegistry


def standing_of(decision: TenantDecision, charged_since_eur: float) -> BudgetStanding:
    """The decision's figures, less what this gateway charged after the decision's spend figure."""
    return BudgetStanding(state=decision.state, cap_eur=decision.cap_eur,
                          remaining_eur=max(decision.remaining_eur - charged_since_eur, 0.0),
                          resets_at=decision.resets_at)


def standing(budgets: Budgets, tenant: str) -> BudgetStanding | None:
    """The tenant's budget as this gateway knows it now (None: it has no budget)."""
    decision = budgets.decision(tenant)
    if decision is None:
        return None
    return standing_of(decision, budgets.charges[tenant].since(counted_until(decision)))


def notice(tenant: str, budget: BudgetStanding | None) -> str | None:
    """In Warning, the sentence a client shows its user (the in-app banner); None otherwise."""
    if budget is None or budget.state != "Warning":
        return None
    used = f"{100 * (1 - budget.remaining_eur / budget.cap_eur):.0f} % of" if budget.cap_eur > 0 else "all of"
    return (f"Tenant '{tenant}' has used {used} today's budget: {eur(budget.remaining_eur)} of {eur(budget.cap_eur)} "
            f"left until {rfc3339(budget.resets_at)}. Requests are refused once it is spent; ask an admin for a raise "
            "if more is needed today.")


class BudgetHeaders:
    """ASGI middleware: the budget's headers on every answer whose request presents a budgeted tenant's key, computed
    as the answer starts (after the request's charge for a JSON answer; before the first chunk of a stream, so a
    stream's headers do not count its own charge)."""

    def __init__(self, app: ASGIApp, budgets: Callable[[], Budgets | None],
                 tenants: Callable[[], TenantRegistry | None]) -> None:
        self.app = app
        self.budgets, self.tenants = budgets, tenants  # read at each request: they exist once the lifespan started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = bearer_token(Headers(scope=scope).get("authorization", "")) if scope["type"] == "http" else None
        if key is None:
            await self.app(scope, receive, send)
            return

        async def send_with_budget(message: Message) -> None:
            if message["type"] == "http.response.start":
                budget = self._standing(key)
                if budget is not None:
                    headers = MutableHeaders(scope=message)
                    for name, value in budget.headers(time.time()).items():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_budget)

    def _standing(self, key: str) -> BudgetStanding | None:
        budgets, tenants = self.budgets(), self.tenants()
        tenant = tenants.authenticate(key) if tenants is not None else None
        return standing(budgets, tenant.id) if tenant is not None and budgets is not None else None
