"""When a gateway's counter, as Prometheus holds it, proves what its lapsed leases really spent: a sample at or after
they settled, or the gateway gone; anything else keeps them holding."""

from __future__ import annotations

import pytest

from lynx_budget.proofs import GONE_AFTER_SCRAPES, gone, scrape_interval, target_of, trusted_as_of

INTERVAL = 5.0
SETTLES_AT = 1000.0  # the lapsed lease's deadline + the longest request
NOW = 1100.0


def scrapes(first: float, last: float) -> list[float]:
    """A target's scrape times, every INTERVAL seconds."""
    return [first + INTERVAL * n for n in range(int((last - first) / INTERVAL) + 1)]


def test_a_sample_at_or_after_the_settle_time_proves_as_of_that_sample():
    seen = scrapes(800, 1005)
    assert trusted_as_of(seen, seen, NOW, SETTLES_AT, NOW) == 1005
    exactly = scrapes(800, 1000)
    assert trusted_as_of(exactly, exactly, 1000, SETTLES_AT, NOW) == 1000


def test_samples_only_before_the_settle_time_of_a_live_gateway_prove_nothing():
    # Scraped up to a moment ago; a request its lease admitted may still be running and charge later.
    seen = scrapes(800, 995)
    assert trusted_as_of(seen, seen, 995, SETTLES_AT, NOW) is None
    # Prometheus fell behind (nothing scraped since): unsure, not gone.
    assert trusted_as_of(seen, seen, 997, SETTLES_AT, NOW) is None


def test_a_gateway_never_scraped_proves_nothing():
    assert trusted_as_of([], scrapes(800, 1095), 1095, SETTLES_AT, NOW) is None


@pytest.mark.parametrize("missed", range(1, GONE_AFTER_SCRAPES))
def test_a_couple_of_scrapes_without_the_gateway_are_not_enough_to_call_it_gone(missed):
    seen = scrapes(800, 900)
    scraped = scrapes(800, 900 + missed * INTERVAL)  # failed, or answered by another process
    assert not gone(900, scraped, scraped[-1])
    assert trusted_as_of(seen, scraped, scraped[-1], SETTLES_AT, NOW) is None


def test_a_gateway_whose_target_went_on_being_scraped_without_it_is_gone_and_its_last_reading_is_final():
    """Killed (its target down: up 0) or replaced (another process answering there): the scrapes after its last
    sample are its target's, without it."""
    seen = scrapes(800, 900)
    scraped = scrapes(800, 900 + GONE_AFTER_SCRAPES * INTERVAL)
    assert gone(900, scraped, scraped[-1])
    # Proved as of now, though its last sample is older than the settle time: it will never charge again.
    assert trusted_as_of(seen, scraped, scraped[-1], SETTLES_AT, NOW) == NOW


def test_a_gateway_whose_target_left_discovery_is_gone_once_prometheus_scraped_on_for_a_few_intervals():
    seen = scrapes(800, 900)  # its pod deleted: the target and its up series end with its last sample
    assert not gone(900, seen, 900 + (GONE_AFTER_SCRAPES - 1) * INTERVAL)
    assert gone(900, seen, 900 + GONE_AFTER_SCRAPES * INTERVAL)
    assert trusted_as_of(seen, seen, 900 + GONE_AFTER_SCRAPES * INTERVAL, SETTLES_AT, NOW) == NOW
    # One sample only: its interval is unknown, so how long it has been missing means nothing.
    assert not gone(900, [900], 2000)


def test_the_scrape_interval_is_the_median_gap_so_one_slow_scrape_does_not_stretch_it():
    assert scrape_interval([0, 5, 10, 40, 45, 50]) == 5
    assert scrape_interval([7]) is None


def test_the_target_of_an_info_series_is_its_labels_but_the_name_and_the_gateway_id():
    local = {"__name__": "lynx_gateway_lease_info", "gateway_id": "h-1-2", "job": "lynx-gateway",
             "instance": "127.0.0.1:8080"}
    assert target_of(local) == {"job": "lynx-gateway", "instance": "127.0.0.1:8080"}
    # A ServiceMonitor's target: the pod's labels select exactly that pod's series.
    pod = {"__name__": "lynx_gateway_lease_info", "gateway_id": "p-1-2", "namespace": "lynx", "pod": "gw-abc",
           "service": "lynx-gateway", "endpoint": "http", "container": "gateway", "job": "lynx-gateway",
           "instance": "10.1.2.3:8080"}
    assert target_of(pod) == {k: v for k, v in pod.items() if k not in ("__name__", "gateway_id")}
