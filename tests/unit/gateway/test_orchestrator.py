"""The gateway's own errors: what a request that ran out of time is told."""

import pytest

from lynx.gateway.orchestrator import deadline_error


@pytest.mark.parametrize("waited, retry_after", [(0.0, "1"), (0.2, "1"), (9.7, "10"), (60.0, "60")])
def test_a_deadline_exceeded_says_when_to_retry_by_how_long_it_waited_for_a_slot(waited, retry_after):
    error = deadline_error(60, waited)
    assert (error.status, error.code, error.type) == (504, "deadline_exceeded", "timeout_error")
    assert error.headers == {"Retry-After": retry_after}
    assert f"retry after {retry_after} s" in error.message and "(60 s)" in error.message
