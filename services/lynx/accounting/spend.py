"""What a tenant spent between two moments, from the gateways' cost counter in Prometheus: the one way spend is read
back, by the budget controller (its day so far) and by the gateway's usage report (its day, 7 and 30 days).

Not ``increase()``: docs/COSTS.md ("Daily spend from Prometheus") says why. The window's raw samples of every series
of ``lynx_tenant_cost_eur_total`` for the tenant (one per gateway replica and outcome) are fetched with those of
``lynx_tenant_cost_eur_created`` (the time each counter was created, scraped with it), and ``spend_from_samples``
(pure) computes the increase since the window's start.

The lease ledger's proofs read one gateway process's own counter the same way: ``target`` narrows the series to one
scrape target's, and ``scraped_at`` keeps only the samples of the scrapes that process answered (another process may
answer at the same address before or after it).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from lynx.telemetry.counters import BASELINE_MARGIN, created_times, increase
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError, label_value

COUNTER = "lynx_tenant_cost_eur_total"
CREATED = "lynx_tenant_cost_eur_created"


@dataclass(frozen=True)
class SpendReading:
    spent_eur: float
    as_of: datetime  # the time the figure is exact for (the newest sample used), tz-aware UTC


def window_seconds(day_start: datetime, now: datetime) -> int:
    """The range a spend read fetches, from a little before ``day_start`` (its baselines) to now: a day is 23, 24 or
    25 h, never assumed."""
    return math.ceil((now - day_start + BASELINE_MARGIN).total_seconds())


def label_matchers(labels: Mapping[str, str]) -> str:
    """``labels`` as PromQL equality matchers (``a="x",b="y"``)."""
    return ",".join(f"{name}={label_value(value)}" for name, value in sorted(labels.items()))


def spend_query(tenant: str, day_start: datetime, now: datetime, target: Mapping[str, str] | None = None) -> str:
    """The raw samples of the tenant's counters and of their creation times (those of one scrape ``target`` only,
    when given), over ``window_seconds`` (a range selector, evaluated at now)."""
    matchers = label_matchers({**(target or {}), "tenant": tenant})
    return f'{{__name__=~"{COUNTER}|{CREATED}",{matchers}}}[{window_seconds(day_start, now)}s]'


def scraped_at(rows: list[dict], times: Collection[float]) -> list[dict]:
    """``rows`` (matrix results) with only their samples at ``times`` (one process's scrapes: every sample of one
    scrape has the scrape's time)."""
    kept = frozenset(times)
    return [{**row, "values": [pair for pair in row["values"] if float(pair[0]) in kept]} for row in rows]


def spend_from_samples(series: list[dict], created: dict[frozenset, dict[float, float]], day_start: datetime,
                       now: datetime) -> SpendReading:
    """Spend since ``day_start`` summed over ``series`` (the counters' matrix results), as of the newest sample used
    (``lynx.telemetry.counters.increase``). With no sample in the window (no series: the tenant has not been
    charged), the spend is 0 as of ``day_start``."""
    total, newest = increase(series, created, day_start.timestamp(), now.timestamp())
    return SpendReading(total, datetime.fromtimestamp(newest, UTC) if newest is not None else day_start)


def read_spend(prometheus: PrometheusClient, tenant: str, day_start: datetime, now: datetime,
               target: Mapping[str, str] | None = None, scrapes: Collection[float] | None = None) -> SpendReading:
    """What ``tenant`` spent from ``day_start`` to ``now``, over every gateway replica and outcome; or only what one
    gateway process charged: the series of its scrape ``target`` at the ``scrapes`` it answered (unix seconds).

    No series at all is not an error (the tenant has not been charged): 0. Raises PrometheusError.
    """
    rows = prometheus.samples(spend_query(tenant, day_start, now, target), now)
    try:
        counters = [row for row in rows if row["metric"]["__name__"] == COUNTER]
        if scrapes is not None:
            counters = scraped_at(counters, scrapes)
        return spend_from_samples(counters, created_times(rows, CREATED), day_start, now)
    except (KeyError, TypeError, ValueError) as error:
        raise PrometheusError("BadAnswer", f"Prometheus at {prometheus.url} answered samples that are not "
                                           f"counter samples ({type(error).__name__}: {error!r})") from error
