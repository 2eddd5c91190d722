"""What a tenant spent since its local midnight, from the gateways' cost counter in Prometheus.

Not ``increase()``: docs/COSTS.md ("Daily spend from Prometheus") says why. The day's raw samples of every series
of ``lynx_tenant_cost_eur_total`` for the tenant (one per gateway replica and outcome) are fetched with those of
``lynx_tenant_cost_eur_created`` (the time each counter was created, scraped with it), and ``spend_from_samples``
(pure) computes the increase since midnight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError, label_value
from lynx_budget.policy import SpendFailure, SpendReading

COUNTER = "lynx_tenant_cost_eur_total"
CREATED = "lynx_tenant_cost_eur_created"
# Fetched before midnight, so that each series' last sample at or before midnight (its baseline) is in the answer.
BASELINE_MARGIN = timedelta(minutes=10)


@dataclass(frozen=True)
class Sample:
    at: float  # unix seconds (Prometheus' scrape time)
    value: float  # the counter
    created: float | None  # the counter's creation time, scraped with it; None when Prometheus has no _created


def spend_query(tenant: str, day_start: datetime, now: datetime) -> str:
    """The raw samples of the tenant's counters and of their creation times, from a little before midnight to now
    (a range selector, evaluated at now): a day is 23, 24 or 25 h, never assumed."""
    seconds = math.ceil((now - day_start + BASELINE_MARGIN).total_seconds())
    return f'{{__name__=~"{COUNTER}|{CREATED}",tenant={label_value(tenant)}}}[{seconds}s]'


def series_key(metric: dict[str, str]) -> frozenset:
    """A series' identity without its name, so a counter and its ``_created`` series share it."""
    return frozenset((k, v) for k, v in metric.items() if k != "__name__")


def new_life(previous: Sample, sample: Sample) -> bool:
    """Whether ``sample`` comes from another counter than ``previous`` (the process restarted in between)."""
    if previous.created is not None and sample.created is not None:
        return sample.created != previous.created  # also when the new counter already holds more than the old one
    return sample.value < previous.value


def counter_start(previous: Sample | None, sample: Sample, day_start: float) -> float:
    """What a new counter, first seen in the window at ``sample``, counts from: its increase today is value - this."""
    if sample.created is not None:
        # Created today: it started from 0, so its first sample counts whole (increase() would lose it).
        # Created before midnight with no sample of it at or before midnight: what it held at midnight is unknown;
        # it counts from its first sample rather than bill yesterday's spend today.
        return 0.0 if sample.created >= day_start else sample.value
    if previous is not None:
        return 0.0  # the value dropped: the counter restarted from 0 after the previous sample
    return sample.value  # no baseline and no creation time: as above, never bill what may be yesterday's


def series_spend(samples: list[Sample], day_start: float) -> float:
    """The increase since ``day_start`` of one series (time-ordered samples up to now), counter restarts included."""
    baseline = [s for s in samples if s.at <= day_start][-1:]
    previous = baseline[0] if baseline else None
    spent, start = 0.0, None  # start: what the counter followed since ``previous`` counts from
    for sample in (s for s in samples if s.at > day_start):
        if previous is None or new_life(previous, sample):
            if start is not None:
                spent += previous.value - start
            start = counter_start(previous, sample, day_start)
        elif start is None:
            start = previous.value  # the same counter as at midnight: its value then is the baseline
        previous = sample
    return spent if start is None else spent + previous.value - start


def spend_from_samples(series: list[dict], created: dict[frozenset, dict[float, float]], day_start: datetime,
                       now: datetime) -> SpendReading:
    """Spend since ``day_start`` summed over ``series`` (the counters' matrix results), as of the newest sample used.

    ``created`` holds each series' creation time at each of its samples (``series_key`` -> sample time -> creation
    time, from the ``_created`` series scraped with it): a change is a restart even when the value did not drop.
    With no sample in the window (no series: the tenant has not been charged), the spend is 0 as of ``day_start``.
    """
    start, end = day_start.timestamp(), now.timestamp()
    total, newest = 0.0, None
    for row in series:
        creations = created.get(series_key(row["metric"]), {})
        samples = sorted((Sample(float(t), float(v), creations.get(float(t))) for t, v in row["values"]),
                         key=lambda s: s.at)
        samples = [s for s in samples if s.at <= end]
        if any(not math.isfinite(s.value) for s in samples):
            raise ValueError(f"a non-finite counter value in {row['metric']}")
        total += series_spend(samples, start)
        if samples and samples[-1].at > start:
            newest = samples[-1].at if newest is None else max(newest, samples[-1].at)
    return SpendReading(total, datetime.fromtimestamp(newest, UTC) if newest is not None else day_start)


def read_spend(prometheus: PrometheusClient, tenant: str, day_start: datetime, now: datetime) -> SpendReading:
    """What ``tenant`` spent from ``day_start`` to ``now``, over every gateway replica and outcome.

    No series at all is not an error (the tenant has not been charged): 0. Raises PrometheusError.
    """
    rows = prometheus.samples(spend_query(tenant, day_start, now), now)
    try:
        counters = [row for row in rows if row["metric"]["__name__"] == COUNTER]
        created = {series_key(row["metric"]): {float(t): float(c) for t, c in row["values"]}
                   for row in rows if row["metric"]["__name__"] == CREATED}
        return spend_from_samples(counters, created, day_start, now)
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
