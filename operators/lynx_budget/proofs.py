"""What one gateway process really charged a tenant-day, read from Prometheus, and whether that reading settles its
leases (``leases.prove``): how a lease not renewed by its deadline stops counting as fully spent.

Each gateway exports its id in the lease protocol as an info series (``lynx_gateway_lease_info{gateway_id}``,
``lynx.telemetry.metrics``). That series' other labels are its scrape target's: job and instance locally; namespace,
pod, service, endpoint, container, job and instance through the chart's ServiceMonitor. The gateway's own cost
counter is the tenant's series with those target labels, at the scrapes the info series has a sample in: one
address may be answered by an earlier or a later process (a gateway restarted on its port, a container restarted in
its pod), whose samples are not this gateway's.

A reading settles the leases whose requests had all ended (deadline + the longest request) when it was exact:
- a sample of the gateway at or after that moment: the counter then holds every charge those leases admitted;
- or the gateway is gone: its target was scraped ``GONE_AFTER_SCRAPES`` times since its last sample without it
  answering (down, or another process there), or Prometheus went on scraping for that many of the target's scrape
  intervals after the target's last scrape (removed from discovery). What Prometheus last holds of it is then all
  it will ever hold: charges made after its last scrape died with it, and the tenant's spend read from Prometheus
  misses them too (docs/COSTS.md).
Anything else (no sample of it, too few scrapes since, Prometheus unreadable) proves nothing: the leases keep holding.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import UTC, datetime

from lynx.accounting.spend import label_matchers, read_spend, window_seconds
from lynx.telemetry.metrics import GATEWAY_ID_LABEL, GATEWAY_LEASE_INFO
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError, label_value
from lynx_budget.leases import Proof

# "More than a couple of scrape intervals": fewer could be one slow or failed scrape of a gateway still at work.
GONE_AFTER_SCRAPES = 3
SCRAPED = "up"  # Prometheus' own series: one sample per scrape of each target, 1 or 0 (failed)
NEWEST_SCRAPE_QUERY = f"max(timestamp({SCRAPED}))"


def scrape_interval(scrapes: Sequence[float]) -> float | None:
    """The target's scrape interval, from the times it was scraped (the median gap: one slow scrape does not count);
    None from fewer than two."""
    ordered = sorted(scrapes)
    gaps = [later - earlier for earlier, later in zip(ordered, ordered[1:], strict=False)]
    return statistics.median(gaps) if gaps else None


def gone(last_seen: float, scraped: Sequence[float], newest_scrape: float | None) -> bool:
    """Whether the gateway last seen at ``last_seen`` is gone, from every scrape of its target (``scraped``) and the
    newest scrape of any target (``newest_scrape``; None: none)."""
    missed = [t for t in scraped if t > last_seen]  # scrapes it did not answer: every sample of a scrape has its time
    if len(missed) >= GONE_AFTER_SCRAPES:
        return True
    interval = scrape_interval(scraped)
    if interval is None or newest_scrape is None:
        return False
    target_last_scraped = max([last_seen, *scraped])
    return newest_scrape - target_last_scraped >= GONE_AFTER_SCRAPES * interval


def trusted_as_of(seen: Sequence[float], scraped: Sequence[float], newest_scrape: float | None, settles_at: float,
                  now: float) -> float | None:
    """When a reading of the gateway's counter from its samples at ``seen`` is exact for, if it settles the leases
    whose requests ended by ``settles_at``: its newest sample, when at or after then; ``now`` when the gateway is gone
    (nothing more will be charged); None when unsure (keep holding). Times in unix seconds."""
    if not seen:
        return None  # never scraped (or not in this window): nothing to prove with
    last_seen = max(seen)
    if last_seen >= settles_at:
        return last_seen
    return now if gone(last_seen, scraped, newest_scrape) else None


def target_of(metric: dict[str, str]) -> dict[str, str]:
    """The scrape target's labels of a gateway's info series."""
    return {name: value for name, value in metric.items() if name not in ("__name__", GATEWAY_ID_LABEL)}


def read_proof(prometheus: PrometheusClient, tenant: str, day_started_at: datetime, gateway: str,
               settles_at: datetime, now: datetime) -> Proof | None:
    """The gateway's own charged counter for the tenant-day, as a proof that settles the leases whose requests ended
    by ``settles_at``; None when Prometheus cannot prove that yet. Raises PrometheusError."""
    # Read first: any scrape it counts is in the reads below, so a scrape the gateway answered cannot look missed.
    newest = prometheus.query(NEWEST_SCRAPE_QUERY, now)
    window = f"[{window_seconds(day_started_at, now)}s]"
    lives = prometheus.samples(f"{GATEWAY_LEASE_INFO}{{{GATEWAY_ID_LABEL}={label_value(gateway)}}}{window}", now)
    readings: list[tuple[float, float]] = []
    try:
        newest_scrape = float(newest[0]["value"][1]) if newest else None
        for target in {frozenset(target_of(life["metric"]).items()) for life in lives}:
            labels = dict(target)
            # The gateway's samples and every scrape of its target, from one query: one consistent view.
            rows = prometheus.samples(
                f'{{__name__=~"{SCRAPED}|{GATEWAY_LEASE_INFO}",{label_matchers(labels)}}}{window}', now)
            seen = [float(t) for row in rows if row["metric"].get(GATEWAY_ID_LABEL) == gateway
                    for t, _ in row["values"]]
            scraped = [float(t) for row in rows if row["metric"]["__name__"] == SCRAPED for t, _ in row["values"]]
            as_of = trusted_as_of(seen, scraped, newest_scrape, settles_at.timestamp(), now.timestamp())
            if as_of is None:
                return None
            readings.append((read_spend(prometheus, tenant, day_started_at, now, labels, seen).spent_eur, as_of))
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise PrometheusError("BadAnswer", f"Prometheus at {prometheus.url} answered series that are not scrape "
                                           f"samples ({type(error).__name__}: {error!r})") from error
    if not readings:
        return None
    # Scraped as two targets (two jobs, say): the larger count and the earlier time, never the optimistic pair.
    charged = max(c for c, _ in readings)
    as_of = min(t for _, t in readings)
    return Proof(tenant, day_started_at, gateway, charged, datetime.fromtimestamp(as_of, UTC))
