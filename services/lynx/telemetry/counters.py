"""Exact counter increases from Prometheus' raw samples: restarts, gaps and counters born in the window counted, nothing
extrapolated (``increase()`` extrapolates and loses a new counter's first sample: docs/COSTS.md, "Daily spend from
Prometheus"). The budget controller's spend and the chaos checks' cost reconciliation both count with this."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

# Fetched before the window starts, so that each series' last sample at or before the start (its baseline) is in
# the answer.
BASELINE_MARGIN = timedelta(minutes=10)


@dataclass(frozen=True)
class Sample:
    at: float  # unix seconds (Prometheus' scrape time)
    value: float  # the counter
    created: float | None  # the counter's creation time, scraped with it; None when Prometheus has no _created


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


def increase(series: list[dict], created: dict[frozenset, dict[float, float]], start: float,
             end: float) -> tuple[float, float | None]:
    """The increase from ``start`` to ``end`` (unix seconds) summed over ``series`` (a counter family's matrix
    results), and the time of the newest sample used (None: no sample in the window).

    ``created`` holds each series' creation time at each of its samples (``series_key`` -> sample time -> creation
    time, from the ``_created`` series scraped with it): a change is a restart even when the value did not drop.
    """
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
    return total, newest


def created_times(rows: list[dict], created_name: str) -> dict[frozenset, dict[float, float]]:
    """``increase``'s ``created`` from the ``_created`` series among ``rows``."""
    return {series_key(row["metric"]): {float(t): float(c) for t, c in row["values"]}
            for row in rows if row["metric"]["__name__"] == created_name}
