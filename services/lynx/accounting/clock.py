"""A request's stopwatch and the stopwatches of its stages, kept apart so that they can disagree.

The identity check compares the two: stages timed twice add up to more than the request took,
code that runs outside every stage leaves a gap. Stages are timed with ``with clock.stage(name)``
around the code (including awaits) that belongs to them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StageClock:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        stop = self.start_stage(name)
        try:
            yield
        finally:
            stop()

    def start_stage(self, name: str) -> Callable[[], None]:
        """For a stage that another task ends: returns the function that stops its timer (once)."""
        started = time.perf_counter()
        stopped = False

        def stop() -> None:
            nonlocal stopped
            if not stopped:
                stopped = True
                self.seconds[name] += time.perf_counter() - started
        return stop

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
