"""Stop sequences over streamed text: hold back what might be the start of a stop string."""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Text safe to emit now; sets ``stopped`` and drops the stop string when one completes."""
        if self.stopped:
            return ""
        self._pending += delta
        hits = [(self._pending.find(s), s) for s in self.stops if s in self._pending]
        if hits:
            position = min(index for index, _ in hits)
            self.stopped = True
            text, self._pending = self._pending[:position], ""
            return text
        held = self._longest_partial_stop()
        text = self._pending[:len(self._pending) - held]
        self._pending = self._pending[len(text):]
        return text

    def flush(self) -> str:
        """Whatever was held back, at the end of generation."""
        text, self._pending = ("" if self.stopped else self._pending), ""
        return text

    def _longest_partial_stop(self) -> int:
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(stop[:size]):
                    longest = size
                    break
        return longest
