"""The budget operator's settings, from LYNX_OPERATOR_* (the chart sets them from `operator.*` values)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lynx.contracts.budgets import UnknownSpend


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LYNX_OPERATOR_", extra="ignore", frozen=True)

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
