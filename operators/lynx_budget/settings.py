"""The budget controllers' settings: the lease terms both share, and the operator's, from LYNX_OPERATOR_* (the chart
sets them from `operator.*` values). The local controller's are ``local.LocalBudgetSettings``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lynx.contracts.budgets import UnknownSpend
from lynx.service.settings import ServiceSettings
from lynx_budget.leases import LeaseTerms


class LeaseTermsSettings(BaseSettings):
    """The terms of the spend leases a budget controller grants (``lease_desk``)."""

    lease_lifetime_seconds: float = Field(default=30.0, gt=0, description="How long a lease is valid.")
    longest_request_seconds: float = Field(
        default=120.0, gt=0, description="The gateways' limit on one request (at least their request deadline): "
                                         "what a lease admitted has charged this long after it expired.")
    smallest_request_eur: float = Field(
        default=1e-9, gt=0, description="A floor for the worst case of the cheapest request; the largest the gateways "
                                        "report for a tenant-day counts when larger. A tenant whose remainder cannot "
                                        "pay it is Blocked.")

    def lease_terms(self) -> LeaseTerms:
        return LeaseTerms(lifetime_seconds=self.lease_lifetime_seconds,
                          longest_request_seconds=self.longest_request_seconds,
                          smallest_request_eur=self.smallest_request_eur)


class OperatorSettings(ServiceSettings, LeaseTermsSettings):
    """``host`` and ``port``: the lease endpoint the gateways renew their spend leases at (``POST /v1/leases``)."""

    model_config = SettingsConfigDict(env_prefix="LYNX_OPERATOR_", extra="ignore", frozen=True)

    port: int = Field(default=8087, ge=1, le=65535)
    leases: bool = Field(
        default=True, description="Serve spend leases: the gateways given this operator's lease URL admit a "
                                  "budgeted tenant's requests only within their leases, so its cap holds across them.")
    lease_token_file: Path = Field(
        default=Path("/etc/lynx/lease-token/token"),
        description="The token the gateways present (Authorization: Bearer): the chart's Secret, mounted.")
    leases_configmap_name: str = Field(
        default="lynx-budget-leases", min_length=1, max_length=253,
        description="The ConfigMap the lease ledger is persisted in (key ledger.json), in configmap_namespace; the "
                    "chart creates it.")

    prometheus_url: str = Field(
        default="http://127.0.0.1:9090", pattern=r"^https?://.+",
        description="The Prometheus that scrapes the gateways; each tenant's spend is read from it.")
    prometheus_timeout_seconds: float = Field(default=5.0, gt=0, description="One spend query's time limit.")
    interval_seconds: float = Field(default=30.0, ge=1, description="Time between two spend reads of one budget.")
    configmap_name: str = Field(
        default="lynx-budgets", min_length=1, max_length=253,
        description="The ConfigMap the decisions are published in (key budgets.json); the chart creates it.")
    configmap_namespace: str = Field(
        min_length=1, max_length=63, description="Its namespace: the operator's own (the chart sets it).")
    unknown_spend: UnknownSpend = Field(
        default="open",
        description="When a tenant's spend cannot be read and no earlier decision is known: serve it (open) or refuse "
                    "it (closed). A Blocked tenant is never unblocked by a failed read either way.")
    unknown_tenants: UnknownSpend = Field(
        default="open", description="Tenants without a TenantBudget: served (open) or refused (closed) by the gateways.")
    history_limit: int = Field(default=20, ge=1, le=200, description="Audit entries kept in each budget's status.")
    metrics_port: int = Field(default=8085, ge=1, le=65535, description="Port of /metrics (all interfaces).")
    clock_offset_seconds: float = Field(
        default=0.0,
        description="Tests only: added to the wall clock the operator decides by, to move a tenant past its midnight.")
