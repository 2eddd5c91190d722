"""What a tenant spent since its local midnight, from the gateways' cost counter in Prometheus.

Not ``increase()``: docs/COSTS.md ("Daily spend from Prometheus") says why. The day's raw samples of every series
of ``lynx_tenant_cost_eur_total`` for the tenant (one per gateway replica and outcome) are fetched with those of
``lynx_tenant_cost_eur_created`` (the time each counter was created, scraped with it), and ``spend_from_samples``
(pure) computes the increase since midnight.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from lynx.telemetry.counters import BASELINE_MARGIN, created_times, increase
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError, label_value
from lynx_budget.policy import SpendFailure, SpendReading

COUNTER = "lynx_tenant_cost_eur_total"
CREATED = "lynx_tenant_cost_eur_created"


def spend_query(tenant: str, day_start: datetime, now: datetime) -> str:
    """The raw samples of the tenant's counters and of their creation times, from a little before midnight to now
    (a range selector, evaluated at now): a day is 23, 24 or 25 h, never assumed."""
    seconds = math.ceil((now - day_start + BASELINE_MARGIN).total_seconds())
    return f'{{__name__=~"{COUNTER}|{CREATED}",tenant={label_value(tenant)}}}[{seconds}s]'


def spend_from_samples(series: list[dict], created: dict[frozenset, dict[float, float]], day_start: datetime,
                       now: datetime) -> SpendReading:
    """Spend since ``day_start`` summed over ``series`` (the counters' matrix results), as of the newest sample used
    (``lynx.telemetry.counters.increase``). With no sample in the window (no series: the tenant has not been
    charged), the spend is 0 as of ``day_start``."""
    total, newest = increase(series, created, day_start.timestamp(), now.timestamp())
    return SpendReading(total, datetime.fromtimestamp(newest, UTC) if newest is not None else day_start)


def read_spend(prometheus: PrometheusClient, tenant: str, day_start: datetime, now: datetime) -> SpendReading:
    """What ``tenant`` spent from ``day_start`` to ``now``, over every gateway replica and outcome.

    No series at all is not an error (the tenant has not been charged): 0. Raises PrometheusError.
    """
    rows = prometheus.samples(spend_query(tenant, day_start, now), now)
    try:
        counters = [row for row in rows if row["metric"]["__name__"] == COUNTER]
        return spend_from_samples(counters, created_times(rows, CREATED), day_start, now)
    except (KeyError, TypeError, ValueError) as error:
        raise PrometheusError("BadAnswer", f"Prometheus at {prometheus.url} answered samples that are not "
                                           f"counter samples ({type(error).__name__}: {error!r})") from error


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
