"""Failed sign-ins limited per client within a sliding window."""

from __future__ import annotations

from lynx_budget.console.signins import FailedSignins


def test_a_client_over_its_failures_waits_until_the_oldest_leaves_the_window():
    limiter = FailedSignins(allowed=3, window_seconds=60)
    for at in (0.0, 10.0, 20.0):
        assert limiter.retry_after("10.0.0.1", at) is None
        limiter.failed("10.0.0.1", at)
    assert limiter.retry_after("10.0.0.1", 30.0) == 30  # the failure at 0 leaves at 60
    assert limiter.retry_after("10.0.0.2", 30.0) is None  # another client is not held back
    assert limiter.retry_after("10.0.0.1", 60.0) is None


def test_a_client_without_recent_failures_is_forgotten():
    limiter = FailedSignins(allowed=2, window_seconds=5)
    limiter.failed("a", 0.0)
    assert limiter.retry_after("a", 10.0) is None
    assert "a" not in limiter.failures
