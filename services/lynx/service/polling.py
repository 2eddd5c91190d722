"""Waiting for a condition by polling it: the one loop the services' tools, the tests and the benchmarks share.
Nothing of lynx here, so that any module may use it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

Value = TypeVar("Value")


def poll(predicate: Callable[[], Value | None], timeout: float, interval: float = 0.1) -> Value | None:
    """``predicate()``'s first truthy answer, asked every ``interval`` seconds; None if none came within ``timeout``
    seconds. It is asked once more when the time is up, so a slow predicate still gets its last say."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def wait_for(predicate: Callable[[], Value | None], timeout: float, what: str, interval: float = 0.1,
             explain: Callable[[], str] | None = None,
             error: Callable[[str], Exception] = TimeoutError) -> Value:
    """``predicate()``'s first truthy answer; ``error`` naming ``what`` after ``timeout`` seconds, with what
    ``explain()`` says of the state then, when given."""
    value = poll(predicate, timeout, interval)
    if value:
        return value
    state = f"\n{explain()}" if explain else ""
    raise error(f"timed out after {timeout:g} s waiting for {what}{state}")
