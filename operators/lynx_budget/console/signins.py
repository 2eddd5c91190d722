"""Failed sign-ins, limited per client (pure: the clock is passed in), and counted for Prometheus."""

from __future__ import annotations

import functools
import math
import threading
from collections import deque

from prometheus_client import Counter


@functools.cache
def failed_signins() -> Counter:
    return Counter("lynx_console_failed_signins", "Console sign-ins refused: an unknown admin token or tenant key, "
                   "or a client over its limit of failed sign-ins.")


class FailedSignins:
    """At most ``allowed`` failed sign-ins per client within ``window_seconds``: past that, the client waits until
    its oldest failure leaves the window. Clients with no failure left in the window are forgotten."""

    def __init__(self, allowed: int, window_seconds: float) -> None:
        self.allowed = allowed
        self.window = window_seconds
        self.failures: dict[str, deque[float]] = {}
        self.lock = threading.Lock()  # the operator serves on a thread pool too

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self.failures.get(client, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            self.failures.pop(client, None)
        return failures

    def retry_after(self, client: str, now: float) -> int | None:
        """Seconds the client must wait before it may try again; None when it may try now."""
        with self.lock:
            failures = self._recent(client, now)
            if len(failures) < self.allowed:
                return None
            return max(1, math.ceil(failures[0] + self.window - now))

    def failed(self, client: str, now: float) -> None:
        with self.lock:
            self.failures[client] = self._recent(client, now)
            self.failures[client].append(now)
