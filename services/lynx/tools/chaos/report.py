"""What the chaos script prints: a progress line while the load runs, and a table per scenario."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from lynx.tools.chaos.checks import FAILED_OUTCOMES, classify

TICK_SECONDS = 0.5
PLAIN_EVERY_SECONDS = 10.0  # without a terminal: a line this often, and at every change of phase


class Progress:
    """One line, rewritten in place on a terminal: the scenario, its phase, time, and the answers so far."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.live = out.isatty()
        self.title = ""
        self.phase = ""
        self.started = time.monotonic()
        self.counts: Counter = Counter()
        self._printed_at = 0.0

    def begin(self, title: str) -> None:
        self.title, self.phase, self.started, self.counts = title, "load", time.monotonic(), Counter()
        self.show(force=True)

    def record(self, record) -> None:
        self.counts[classify(record)] += 1

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.show(force=True)

    def line(self) -> str:
        c = self.counts
        failed = sum(c[o] for o in FAILED_OUTCOMES)
        return (f"{self.title} | {time.monotonic() - self.started:5.1f} s | {sum(c.values())} answered: "
                f"{c['ok']} ok, {c['error']} errors, {c['refused']} refused, {failed} failed | {self.phase}")

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.live:
            self.out.write("\r\033[K" + self.line())
        elif force or now - self._printed_at >= PLAIN_EVERY_SECONDS:
            self.out.write(self.line() + "\n")
            self._printed_at = now
        else:
            return
        self.out.flush()

    def end(self) -> None:
        if self.live:
            self.out.write("\r\033[K")
            self.out.flush()

    async def tick(self) -> None:
        """Redraws the line until cancelled."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.show()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [headers, [("-" * w) for w in widths], *rows]]
    return "\n".join(lines)


def scenario_report(result) -> str:
    """The scenario's verdict, its load, what was done to the target, and its checks."""
    verdict = "PASS" if result.ok else "FAIL"
    parts = [f"Scenario {result.number}: {result.title} — {verdict}"]
    if result.records:
        streams = sum(1 for r in result.records if r.stream)
        parts.append(f"  load: {len(result.records)} requests ({streams} streamed) in "
                     f"{result.ended_at - result.started_at:.1f} s")
    parts += [f"  {d.describe()}" for d in result.disruptions]
    parts += [f"  note: {note}" for note in result.notes]
    if result.error:
        parts.append(f"  error: {result.error}")
    if result.checks:
        rows = [(c.name, c.measured, c.expected, "ok" if c.ok else "FAILED") for c in result.checks]
        parts.append(indent(table(("check", "measured", "expected", "result"), rows)))
        parts += [f"  {c.name}: {c.detail}" for c in result.checks if not c.ok and c.detail]
    return "\n".join(parts)


def summary(results: Sequence) -> str:
    rows = [(str(r.number), r.title, str(len(r.records)), f"{sum(1 for c in r.checks if c.ok)}/{len(r.checks)}",
             "PASS" if r.ok else "FAIL") for r in results]
    return table(("scenario", "title", "requests", "checks passed", "result"), rows)


def indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in text.splitlines())
