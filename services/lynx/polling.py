"""Waiting for positive evidence: one poll loop for the command line, the chaos checks and the tests."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1, explain=None):
    """Poll ``predicate`` until it returns something truthy (returned); fail with ``what`` after ``timeout`` s,
    and with what ``explain()`` says of the state then, when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    state = f"\n{explain()}" if explain else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{state}")
