"""Per-tenant daily cost budgets: the spec an admin writes, and the decisions every gateway enforces.

The spec mirrors the ``TenantBudget`` custom resource (group ``budgets.lynx.dev``); the same model
reads the embedded default's local budgets file. ``BudgetDecisions`` is what the budget controller
(the kopf operator in Kubernetes, the local loop under ``lynx up``) publishes and the gateway reads
from a file (a ConfigMap mounted as a file in Kubernetes), so the gateway never asks Prometheus.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from lynx.contracts.limits import MAX_TENANT_ID_CHARACTERS

BudgetState = Literal["Ok", "Warning", "Blocked", "Paused"]
UnknownSpend = Literal["open", "closed"]
MAX_RAISE_HOURS = 72
TIMEZONE_PATTERN = r"^(UTC|[A-Za-z]+(/[A-Za-z0-9_+\-]+){1,2})$"  # IANA names; zoneinfo checks they exist


class TemporaryRaise(BaseModel):
    amount_eur: float = Field(gt=0, description="Added to the daily cap until it expires.")
    expires_at: datetime = Field(description="At most 72 h after it was asked for.")
    reason: str = Field(min_length=3, max_length=500)
    requested_by: str = Field(min_length=1, max_length=200)
    requested_at: datetime


class UnreachableAllowance(BaseModel):
    """A tenant's opt-in to keep being served while the controller is unreachable.

    Each gateway may then spend up to ``per_gateway_eur`` beyond its lease for the tenant-day, so the cap may be
    passed by at most (number of gateways) x ``per_gateway_eur`` (``lynx_budget.leases.unreachable_overshoot_eur``).
    Without it a gateway that cannot renew spends what its lease holds, then refuses."""

    per_gateway_eur: float = Field(gt=0, description="What one gateway may spend beyond its lease, per tenant-day.")


class BudgetSpec(BaseModel):
    tenant: str = Field(min_length=1, max_length=MAX_TENANT_ID_CHARACTERS)
    daily_cap_eur: float = Field(ge=0)
    timezone: str = Field(default="UTC", pattern=TIMEZONE_PATTERN, description="Whose midnight resets the day.")
    warning_percent: float = Field(default=80, gt=0, le=100)
    paused: bool = Field(default=False, description="An admin's stop switch: every request refused.")
    raises: list[TemporaryRaise] = Field(default_factory=list)
    per_request_cap_eur: float | None = Field(
        default=None, gt=0, description="No single request may cost more; the answer stops there (finish_reason length).")
    cheaper_near_cap: bool = Field(
        default=False, description="In Warning, route to the cheaper decoder configuration when one is deployed.")
    unreachable_allowance: UnreachableAllowance | None = Field(
        default=None, description="Opt-in: what each gateway may spend beyond its spend lease while the budget "
                                  "controller is unreachable (None: it spends its lease, then refuses).")


class TenantDecision(BaseModel):
    """One tenant's state as the gateway enforces it."""

    tenant: str
    state: BudgetState
    cap_eur: float = Field(description="The effective cap: the daily cap plus the raises in force.")
    spent_eur: float | None = Field(description="Spent today as of spend_as_of; None when it could not be read.")
    remaining_eur: float = Field(description="cap - spent (never negative); 0 when Blocked or Paused.")
    day_started_at: datetime = Field(description="The tenant's last local midnight.")
    resets_at: datetime = Field(description="The tenant's next local midnight.")
    spend_as_of: datetime | None = Field(
        description="The time the spend figure is exact for (its Prometheus sample); the gateway subtracts what it "
                    "charged itself since then.")
    reason: str = Field(description="Why this state, in words a tenant owner can act on.")
    per_request_cap_eur: float | None = None
    cheaper_near_cap: bool = False


class BudgetDecisions(BaseModel):
    generated_at: datetime
    source: str = Field(description="Who published it: 'operator' or 'local'.")
    tenants: dict[str, TenantDecision] = Field(default_factory=dict)
    unknown_tenants: UnknownSpend = Field(
        default="open", description="Tenants without a budget: served (open) or refused (closed).")


UsageState = BudgetState | Literal["unbudgeted"]
# The budget's headers on every answer to a tenant with a budget (in the manner of OpenAI's x-ratelimit-*).
BUDGET_STATE_HEADER = "x-lynx-budget-state"
BUDGET_CAP_HEADER = "x-lynx-budget-cap-eur"
BUDGET_REMAINING_HEADER = "x-lynx-budget-remaining-eur"
BUDGET_RESET_HEADER = "x-lynx-budget-reset"
BUDGET_RESET_SECONDS_HEADER = "x-lynx-budget-reset-seconds"
BUDGET_HEADER_DESCRIPTIONS = {
    BUDGET_STATE_HEADER: "The tenant's budget state: Ok, Warning, Blocked or Paused.",
    BUDGET_CAP_HEADER: "Today's cap in EUR, raises in force included.",
    BUDGET_REMAINING_HEADER: "EUR left today as the answering gateway knows it: the controller's last published "
                             "remaining minus what this gateway charged since; never negative.",
    BUDGET_RESET_HEADER: "When the budget resets (the tenant's next midnight), RFC 3339 in UTC.",
    BUDGET_RESET_SECONDS_HEADER: "Seconds until then.",
}


def rfc3339(moment: datetime) -> str:
    """A moment in UTC as the API writes it: 2026-06-10T22:00:00Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class BudgetStanding(BaseModel):
    """A tenant's budget as the gateway that answers knows it, sent as headers on every answer to a tenant with a
    budget (``headers``; clients read them back with ``from_headers``)."""

    state: BudgetState
    cap_eur: float = Field(description="Today's cap: the daily cap plus the raises in force.")
    remaining_eur: float = Field(description="The published decision's remaining budget minus what this gateway "
                                             "charged the tenant since that decision's spend figure; never negative.")
    resets_at: datetime = Field(description="The tenant's next local midnight.")

    def headers(self, now: float) -> dict[str, str]:
        """``now``: unix seconds, which the seconds to the reset count from."""
        return {BUDGET_STATE_HEADER: self.state, BUDGET_CAP_HEADER: repr(self.cap_eur),
                BUDGET_REMAINING_HEADER: repr(self.remaining_eur), BUDGET_RESET_HEADER: rfc3339(self.resets_at),
                BUDGET_RESET_SECONDS_HEADER: str(max(0, math.ceil(self.resets_at.timestamp() - now)))}

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> BudgetStanding | None:
        """The standing an answer's headers carry (None: the tenant has no budget)."""
        if BUDGET_STATE_HEADER not in headers:
            return None
        return cls(state=headers[BUDGET_STATE_HEADER], cap_eur=float(headers[BUDGET_CAP_HEADER]),
                   remaining_eur=float(headers[BUDGET_REMAINING_HEADER]),
                   resets_at=datetime.fromisoformat(headers[BUDGET_RESET_HEADER]))


class TenantUsage(BaseModel):
    """``GET /v1/lynx/usage``: what the tenant whose key asks spent, from the gateways' cost counter in Prometheus,
    and its budget as the budget controller last published it."""

    object: Literal["lynx.usage"] = "lynx.usage"
    tenant: str
    state: UsageState = Field(description="The controller's state for the tenant; 'unbudgeted' without a budget.")
    spent_today_eur: float = Field(description="Since day_started_at.")
    spent_7_days_eur: float = Field(description="Over the last 7 x 24 h.")
    spent_30_days_eur: float = Field(description="Over the last 30 x 24 h (as far back as Prometheus keeps samples).")
    spend_as_of: datetime = Field(description="The newest counter sample today's figure counts (day_started_at when "
                                              "there is none); charges after it are not in the figures yet.")
    day_started_at: datetime = Field(description="The tenant's last local midnight (UTC's without a budget).")
    resets_at: datetime = Field(description="The tenant's next local midnight (UTC's without a budget).")
    cap_eur: float | None = Field(description="Today's cap, raises included; null without a budget.")
    remaining_eur: float | None = Field(description="cap - spent today, 0 when Blocked or Paused; null without a "
                                                    "budget.")
