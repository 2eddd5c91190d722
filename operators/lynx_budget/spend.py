"""A tenant's spend as the budget controller reads it: its day so far (``lynx.accounting.spend``, the one reader of
the cost counter), or why it could not be read; and which tenants were charged at all.
"""

from __future__ import annotations

import math
from datetime import datetime

from lynx.accounting.spend import COUNTER, SpendReading, read_spend
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError
from lynx_budget.policy import SpendFailure


def read_today(prometheus: PrometheusClient, tenant: str, day_start: datetime, now: datetime
               ) -> SpendReading | SpendFailure:
    """What ``tenant`` spent in its day so far (from ``day_start``, ``policy.day_window``'s), or why that could not be
    read: the operator and the local loop both read spend this way and hand the result to ``policy.reconcile``."""
    try:
        return read_spend(prometheus, tenant, day_start, now)
    except PrometheusError as error:
        return SpendFailure(error.reason, error.detail)


def charged_tenants_query(day_start: datetime, now: datetime) -> str:
    """One series per tenant the cost counter has samples of between ``day_start`` and ``now``."""
    seconds = max(1, math.ceil((now - day_start).total_seconds()))
    return f"count by (tenant) (count_over_time({COUNTER}[{seconds}s]))"


def charged_tenants(prometheus: PrometheusClient, day_start: datetime, now: datetime) -> list[str]:
    """The tenants Prometheus holds cost samples of since ``day_start``, budget or none. Raises PrometheusError."""
    rows = prometheus.query(charged_tenants_query(day_start, now), now)
    return sorted({row["metric"]["tenant"] for row in rows if "tenant" in row.get("metric", {})})
