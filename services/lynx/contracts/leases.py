"""Spend leases: what a gateway asks the budget controller for, and what it is granted.

A gateway admits a tenant's request only within its own lease (an amount of EUR valid until a deadline) for
the tenant's day, so the controller can keep confirmed + outstanding <= cap at every instant across gateways.
The controller's ledger (``lynx_budget.leases``) answers each ``LeaseRequest`` with one ``LeaseGrant``.

The gateway's side of the protocol, which the ledger's guarantees rely on:

- It numbers its requests for one tenant-day 1, 2, 3... (``sequence``) and acts only on the grant answering its
  latest request; a grant that answers an older one (late, duplicated) is ignored. So once the controller has
  read request n, no grant it sent before can come into force any more.
- Until that answer arrives it admits within ``acting_ceiling_eur``, the ceiling it declared (its current
  lease's, or less to give budget back at once; 0 when its lease has expired).
- Its lease runs out ``lifetime_seconds`` after the moment it *sent* the request (never after it received the
  grant), so its deadline never falls after the controller's ``expires_at``.
- Its figures are cumulative for the tenant-day (``charged_eur``): a lost or repeated message loses nothing.
- A gateway process is one ``gateway`` id for life: a restarted process is a new id with a counter from 0.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from lynx.contracts.budgets import BudgetState, UnreachableAllowance
from lynx.contracts.limits import MAX_TENANT_ID_CHARACTERS

# Why a grant is what it is. "granted": up to what was wanted; the others grant nothing beyond keep_eur.
GrantOutcome = Literal[
    "granted",     # keep + min(want, free); less than wanted when little is free
    "exhausted",   # nothing free: the cap is reached or held by other gateways' leases
    "paused",      # an admin paused the tenant
    "rebuilding",  # the controller restarted without its ledger and cannot yet prove what is outstanding
    "other_day",   # the request is for a tenant-day other than the controller's today: reported, not granted
    "stale",       # an older request than one already answered: ignore this grant
]


class LeaseRequest(BaseModel):
    """A gateway's renewal for one tenant-day: what it charged, what it must keep, what it would like."""

    gateway: str = Field(min_length=1, max_length=253, description="This gateway process (pod name and start).")
    tenant: str = Field(min_length=1, max_length=MAX_TENANT_ID_CHARACTERS)
    day_started_at: AwareDatetime = Field(
        description="The tenant-day the lease is for: the tenant's last local midnight.")
    sequence: int = Field(ge=1, description="1, 2, 3... per gateway and tenant-day.")
    sent_at: AwareDatetime = Field(description="The gateway's clock when it sent this: its new lease runs from here.")
    charged_eur: float = Field(ge=0, description="Everything this gateway charged the tenant-day so far.")
    keep_eur: float = Field(
        ge=0, description="charged_eur + the worst cases reserved by its requests in flight: they will still charge, "
                          "so the new ceiling is never below it.")
    want_eur: float = Field(ge=0, description="Headroom wanted above keep_eur; 0 to give back what is not needed.")
    acting_lease_id: str | None = Field(
        default=None, description="The lease it admits under until the answer arrives; None when it has none.")
    acting_ceiling_eur: float = Field(
        default=0, ge=0, description="Its ceiling until the answer arrives (at most that lease's).")
    smallest_request_eur: float = Field(
        default=0, ge=0, description="The worst case of the cheapest request this gateway admits (one prompt token, "
                                     "max_tokens 1, at its rates): a tenant whose remainder cannot pay it is Blocked.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.keep_eur < self.charged_eur:
            raise ValueError(f"keep_eur ({self.keep_eur}) includes charged_eur ({self.charged_eur}) and cannot be "
                             "below it")
        if self.acting_lease_id is None and self.acting_ceiling_eur:
            raise ValueError("acting_ceiling_eur needs the acting_lease_id it belongs to")
        return self


class LeaseGrant(BaseModel):
    """The controller's answer: the gateway may admit while charged + reserved + worst case <= ceiling_eur."""

    gateway: str
    tenant: str
    day_started_at: datetime
    sequence: int = Field(description="The request this answers; the gateway ignores any but its latest.")
    lease_id: str = Field(description="Named in the gateway's next request as its acting lease.")
    ceiling_eur: float = Field(ge=0, description="Cumulative for the tenant-day: charged + reserved may reach it.")
    granted_eur: float = Field(ge=0, description="ceiling_eur - keep_eur: the new headroom.")
    lifetime_seconds: float = Field(gt=0, description="Valid until the request's sent_at + this, on the gateway's "
                                                      "clock.")
    expires_at: datetime = Field(description="The controller's deadline (it received the request at or after "
                                             "sent_at, so it is never before the gateway's).")
    outcome: GrantOutcome
    state: BudgetState = Field(description="The tenant's state as the ledger counts it.")
    reason: str = Field(description="Why, in words a tenant owner can act on.")
    unreachable_allowance: UnreachableAllowance | None = Field(
        default=None, description="The tenant's opt-in, if any, to spending beyond the lease while the controller "
                                  "is unreachable.")
