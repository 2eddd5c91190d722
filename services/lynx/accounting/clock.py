"""A request's stopwatch and the stopwatches of its stages, kept apart so that they can disagree.

The identity check compares the two: stages timed twice add up to more than the request took,
code that runs outside every stage leaves a gap. Stages are timed with ``with clock.stage(name)``
around the code (including awaits) that belongs to them.

A gap is evidence of a missing timer only if the process ran through it. The clock also notes the
gaps during which the event loop's thread was preempted by the kernel or stopped for a full garbage
collection: on a busy machine either can stretch the few lines between two timers past the bound.
"""

from __future__ import annotations

import gc
import resource
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_full_collections = 0


def _count_full_collection(phase: str, info: dict) -> None:
    global _full_collections
    if phase == "stop" and info.get("generation") == 2:
        _full_collections += 1


gc.callbacks.append(_count_full_collection)


def interruptions() -> tuple[int, int]:
    """A token that changes whenever this thread is preempted or the process collects all its garbage."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw, _full_collections


class StageClock:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._interrupted = 0.0  # untimed seconds of the gaps closed so far that were interrupted
        self._open = 0
        self._gap = (self.started, interruptions())  # when the current gap began, and the token then

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
        if self._open == 0:
            self._interrupted += self._gap_interrupted(started)
        self._open += 1
        stopped = False

        def stop() -> None:
            nonlocal stopped
            if not stopped:
                stopped = True
                now = time.perf_counter()
                self.seconds[name] += now - started
                self._open -= 1
                if self._open == 0:
                    self._gap = (now, interruptions())
        return stop

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def interrupted_seconds(self) -> float:
        """Seconds outside every stage during which the loop's thread was preempted or a full collection ran."""
        current = self._gap_interrupted(time.perf_counter()) if self._open == 0 else 0.0
        return self._interrupted + current

    def _gap_interrupted(self, now: float) -> float:
        began, token = self._gap
        return now - began if interruptions() != token else 0.0
