"""Spend since midnight from raw counter samples: resets, series born mid-day, gaps, DST windows, the query."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from lynx.accounting.spend import SpendReading, scraped_at, spend_from_samples, spend_query
from lynx_budget.policy import day_window

MIDNIGHT = datetime(2026, 6, 10, tzinfo=UTC)
T0 = MIDNIGHT.timestamp()
NOW = MIDNIGHT + timedelta(hours=12)
LABELS = {"__name__": "lynx_tenant_cost_eur_total", "tenant": "acme", "outcome": "completed",
          "instance": "10.0.0.7:8080", "job": "lynx-gateway"}

Series = tuple[dict, dict[float, float]]


def counter(samples: list[tuple], **labels: str) -> Series:
    """A counter's matrix result as Prometheus' API returns it, and its creation time at each sample.

    Samples are (seconds from midnight, value) or (seconds from midnight, value, created at, from midnight)."""
    row = {"metric": {**LABELS, **labels}, "values": [[T0 + s[0], repr(s[1])] for s in samples]}
    return row, {T0 + s[0]: T0 + s[2] for s in samples if len(s) > 2}


def reading(*series: Series, now: datetime = NOW) -> SpendReading:
    created = {frozenset((k, v) for k, v in row["metric"].items() if k != "__name__"): born
               for row, born in series if born}
    return spend_from_samples([row for row, _ in series], created, MIDNIGHT, now)


def spend(*series: Series) -> float:
    return reading(*series).spent_eur


def test_the_increase_since_the_last_sample_at_or_before_midnight():
    assert spend(counter([(-30, 5.0), (-15, 5.0), (0, 5.25), (15, 6.0), (3600, 7.5)])) == pytest.approx(2.25)
    # A sample exactly at midnight is the baseline: what it holds was spent yesterday.
    assert spend(counter([(-15, 5.0), (0, 5.25), (15, 6.0)])) == pytest.approx(0.75)


def test_no_series_is_zero_as_of_midnight():
    assert reading() == SpendReading(0.0, MIDNIGHT)


def test_a_series_that_only_lived_before_midnight_adds_nothing():
    old = counter([(-600, 3.0), (-300, 4.0)], instance="10.0.0.1:8080")
    live = counter([(-10, 1.0), (50, 1.5)])
    assert reading(old, live) == SpendReading(pytest.approx(0.5), MIDNIGHT + timedelta(seconds=50))


def test_a_counter_reset_counts_the_new_counter_from_zero():
    samples = [(-10, 5.0), (20, 6.0), (40, 7.0), (60, 0.5), (80, 1.5), (100, 0.25), (120, 0.75)]
    assert spend(counter(samples)) == pytest.approx((7.0 - 5.0) + 1.5 + 0.75)


def test_a_restart_the_value_does_not_show_is_found_by_the_creation_time():
    # The restarted gateway charged more before its first scrape than the old one held: no drop to see.
    lives = [(-10, 0.5, -3600), (20, 0.75, -3600), (60, 2.0, 45), (80, 2.5, 45), (95, 3.0, 90), (110, 3.5, 90)]
    assert spend(counter(lives)) == pytest.approx(0.25 + 2.5 + 3.5)
    # Without the creation times, only a drop shows a restart: each new counter's first value is lost.
    assert spend(counter([s[:2] for s in lives])) == pytest.approx(3.0)


def test_a_series_born_mid_day_counts_its_first_sample_whole():
    # increase() would see 0.5 - 0.3 = 0.2: the first sample has no predecessor.
    assert spend(counter([(7200, 0.3, 7190), (7215, 0.5, 7190)], outcome="deadline")) == pytest.approx(0.5)


def test_a_series_with_no_sample_at_midnight_counts_from_its_first_sample_unless_born_today():
    # Created before midnight (or at an unknown time), no sample at or before midnight (Prometheus was down): its
    # value at midnight is unknown, and counting its first sample whole could bill yesterday's spend today.
    assert spend(counter([(1800, 40.0), (1815, 40.5)])) == pytest.approx(0.5)
    assert spend(counter([(1800, 40.0, -86400), (1815, 40.5, -86400)])) == pytest.approx(0.5)


def test_a_gap_in_scrapes_loses_nothing():
    assert spend(counter([(-15, 1.0), (15, 1.5), (4 * 3600, 4.0), (4 * 3600 + 15, 4.25)])) == pytest.approx(3.25)
    # A reset inside the gap: what the old counter gained after its last scrape is lost, the new one counts whole.
    assert spend(counter([(-15, 1.0), (15, 1.5), (4 * 3600, 0.75)])) == pytest.approx(0.5 + 0.75)


def test_replicas_and_outcomes_are_summed_and_the_reading_is_as_of_the_newest_sample():
    result = reading(counter([(-5, 1.0), (100, 2.0)]),
                     counter([(-5, 0.0), (105, 0.5)], outcome="client_closed"),
                     counter([(-3, 10.0), (98, 10.25)], instance="10.0.0.8:8080"))
    assert result.spent_eur == pytest.approx(1.75)
    assert result.as_of == MIDNIGHT + timedelta(seconds=105) and result.as_of.tzinfo == UTC


def test_samples_after_now_are_ignored():
    result = reading(counter([(-5, 1.0), (100, 2.0), (200, 3.0)]), now=MIDNIGHT + timedelta(seconds=150))
    assert result == SpendReading(pytest.approx(1.0), MIDNIGHT + timedelta(seconds=100))


def test_a_non_finite_value_is_refused():
    with pytest.raises(ValueError, match="non-finite"):
        spend(counter([(-5, 1.0), (10, float("nan"))]))


def simulated_gateway(rng: random.Random, end: float, **labels: str) -> tuple[Series, list[tuple[float, float]]]:
    """One counter series as Prometheus stores it (with its creation times) and every charge made (time, EUR).

    Scraped every 15 s from 30 min before midnight (one scrape at midnight, one at ``end``), charges between
    scrapes, stretches of lost scrapes, and restarts right after a scrape Prometheus kept: the new process creates
    the series at its first charge, from 0, and half the time that charge alone beats what the old counter held
    (no drop to see).
    """
    grid = [-1800.0 + 15 * i for i in range(int((end + 1800) / 15) + 1)]
    lost: set[int] = set()
    while rng.random() < 0.7:
        first = rng.randrange(len(grid))
        lost.update(range(first, first + rng.randrange(4, 240)))
    lost -= {0, grid.index(0.0), len(grid) - 1}
    restarts = {i for i in range(len(grid) - 1) if i not in lost and rng.random() < 0.003}
    value, created, unborn = rng.uniform(0, 5), -86400.0, False
    samples, charges = [(grid[0], value, created)], []
    for i in range(1, len(grid)):
        for _ in range(rng.choice([0, 0, 1, 3])):
            at, cost = grid[i] - rng.uniform(0.01, 14.99), rng.uniform(1e-6, 0.01)
            if unborn:  # the new process's first charge creates the series
                value, created, unborn = 0.0, at, False
                cost = rng.choice([cost, rng.uniform(6, 10)])
            value += cost
            charges.append((at, cost))
        if i not in lost and not unborn:
            samples.append((grid[i], value, created))
        unborn = unborn or i in restarts
    return counter(samples, **labels), charges


@pytest.mark.parametrize("seed", range(40))
def test_the_spend_equals_the_charges_made_since_midnight(seed):
    """Against an independent tally of the charges, over two replicas and two outcomes."""
    rng = random.Random(seed)
    end = 6 * 3600.0
    series, expected = [], 0.0
    for instance, outcome in [("10.0.0.7:8080", "completed"), ("10.0.0.7:8080", "failed"),
                              ("10.0.0.8:8080", "completed")]:
        one, charges = simulated_gateway(rng, end, instance=instance, outcome=outcome)
        series.append(one)
        newest = one[0]["values"][-1][0] - T0
        expected += sum(cost for at, cost in charges if 0 < at <= newest)
    result = reading(*series, now=MIDNIGHT + timedelta(seconds=end))
    assert result.spent_eur == pytest.approx(expected, rel=1e-9)
    assert result.as_of.timestamp() == max(row["values"][-1][0] for row, _ in series)


def test_the_query_fetches_counters_and_creation_times_from_before_midnight_and_escapes_the_tenant():
    day_start, resets_at = day_window("Europe/Paris", datetime(2026, 10, 25, 12, tzinfo=UTC))
    query = spend_query('a"b\\c', day_start, resets_at - timedelta(seconds=1))
    assert query == ('{__name__=~"lynx_tenant_cost_eur_total|lynx_tenant_cost_eur_created",tenant="a\\"b\\\\c"}'
                     f"[{25 * 3600 - 1 + 600}s]")
    # A 23-hour day, just after its midnight.
    day_start, _ = day_window("Europe/Paris", datetime(2026, 3, 29, 12, tzinfo=ZoneInfo("Europe/Paris")))
    assert spend_query("acme", day_start, day_start + timedelta(seconds=0.2)).endswith("[601s]")


def test_one_targets_query_selects_its_series_by_every_target_label():
    query = spend_query("acme", MIDNIGHT, NOW, target={"pod": "gw-abc", "namespace": "lynx"})
    assert query == ('{__name__=~"lynx_tenant_cost_eur_total|lynx_tenant_cost_eur_created",namespace="lynx",'
                     f'pod="gw-abc",tenant="acme"}}[{12 * 3600 + 600}s]')


def test_one_process_spend_counts_only_the_scrapes_it_answered_at_its_address():
    """A gateway restarted on the same address: the earlier process charged 1.0 today, the later one 0.75."""
    row, created = counter([(-10, 4.0, -3600), (10, 4.5, -3600), (20, 5.0, -3600), (30, 0.25, 25), (40, 0.75, 25)])
    assert spend((row, created)) == pytest.approx(1.0 + 0.75)
    earlier = [T0 - 10, T0 + 10, T0 + 20]
    later = [T0 + 30, T0 + 40]
    assert spend((scraped_at([row], earlier)[0], created)) == pytest.approx(1.0)
    assert spend((scraped_at([row], later)[0], created)) == pytest.approx(0.75)
    assert scraped_at([row], [])[0]["values"] == []
